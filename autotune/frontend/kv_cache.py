"""The decoder steps rewritten for serving: a KV cache of fixed capacity, keys stored transposed.

An export's ``decoder_with_past_model.onnx`` takes a cache as long as the tokens so far and reads
that length from the cache's shape: the new token's position, its attention mask, the grown cache
``present.*`` one longer. Compiled kernels want static shapes, and a cache padded to a capacity
would make the graph think the padding is past. ``with_fixed_capacity`` keeps the export's graph
and gives it:

* ``position_ids [1]``: the new token's position (the tokens already cached); it replaces the
  index the export computes from the cache's shape where it looks up its position table;
* ``cache_mask [batch, capacity]``: 1 where the cache holds a token; the self-attention of every
  layer masks the other slots (the new token's slot is always seen);
* ``beam_rows [batch]``: the cache row each row continues (beam search reorders beams in place);
* ``present.{i}.decoder.*`` of the capacity's length: the cache reordered by ``beam_rows`` with the
  new token's keys and values written at slot ``position_ids``, in one kernel per tensor; the
  self-attention reads that written cache (no concatenation of past and new).

Keys, of the cache and of the cross-attention alike, travel transposed, ``[batch, heads, head_dim,
length]``: the layout the scores' matmul reads. The first step (``with_keys_transposed``) writes
them so, once per generation, and the scalar scale an export applies to the transposed keys moves
to the queries (one row per step), so no step transposes or scales a cache.

So the capacity is a dim like the batch: padding it changes nothing (``frontend.ranged`` checks
that on ONNX Runtime), and one artifact serves every length up to its largest capacity.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import AutotuneError

CAPACITY = "cache_capacity"  # the dim name of the cache's slots in the rewritten graph
POSITION, CACHE_MASK, BEAM_ROWS = "position_ids", "cache_mask", "beam_rows"
_DECODER_CACHE = re.compile(r"^(past_key_values|present)\.\d+\.decoder\.(key|value)$")  # self-attention's
_KEYS = re.compile(r"^(past_key_values|present)\.\d+\.(decoder|encoder)\.key$")  # stored transposed
_LOWEST = float(np.finfo(np.float32).min)


class _Graph:
    """Producers and consumers of the tensors of a graph being rewritten."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.initializers = {t.name for t in graph.initializer}
        self.inputs = {i.name for i in graph.input}
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.added: list[onnx.NodeProto] = []
        self._count = 0

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        self._count += 1
        out = f"autotune_kv/{op_type}_{self._count}"
        self.added.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def redirect(self, old: str, new: str) -> None:
        """The nodes that read tensor ``old`` (as the graph was given) read ``new`` instead."""
        for node in self.consumers.get(old, []):
            node.input[:] = [new if i == old else i for i in node.input]

    def const(self, value: np.ndarray) -> str:
        self._count += 1
        name = f"autotune_kv/const_{self._count}"
        self.graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    def reads_input_values(self, name: str, seen: set | None = None) -> bool:
        """Whether tensor ``name`` depends on the values (not only the shapes) of a graph input."""
        seen = set() if seen is None else seen
        if name in seen or name in self.initializers:
            return False
        seen.add(name)
        if name in self.inputs:
            return True
        node = self.producer.get(name)
        if node is None or node.op_type == "Shape":
            return False
        return any(self.reads_input_values(i, seen) for i in node.input if i)


def with_fixed_capacity(model: onnx.ModelProto, layers: int, path: Path) -> onnx.ModelProto:
    """``model`` (a decoder step with past, Optimum's layout) rewritten for a cache of fixed
    capacity, keys transposed; ``AutotuneError`` naming ``path`` where its graph does not have the
    expected form."""
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    g = _Graph(rewritten.graph)
    batch = _input_dim(g, "input_ids", 0)
    g.graph.input.extend([
        helper.make_tensor_value_info(POSITION, TensorProto.INT64, [1]),
        helper.make_tensor_value_info(CACHE_MASK, TensorProto.INT64, [batch, CAPACITY]),
        helper.make_tensor_value_info(BEAM_ROWS, TensorProto.INT64, [batch])])
    _use_position_input(g, path)
    rows, slot = _beam_rows(g), _new_slot(g)
    allowed = _self_attention_mask(g, slot)
    slots = {kind: g.op("Reshape", [slot, g.const(np.array(shape, np.int64))])  # the slot axis of each
             for kind, shape in (("key", [1, 1, 1, -1]), ("value", [1, 1, -1, 1]))}
    for layer in range(layers):
        _cached_self_attention(g, layer, rows, slots, allowed, path)
        _read_keys_transposed(g, f"past_key_values.{layer}.encoder.key", path)
    _declare_cache_dims(g)
    rewritten.graph.node.extend(g.added)
    _sort_topologically(rewritten.graph)
    _drop_unused(rewritten.graph)
    return rewritten


def with_keys_transposed(model: onnx.ModelProto, layers: int, path: Path) -> onnx.ModelProto:
    """``model`` (the first decoder step) writing its keys ``present.{i}.*.key`` transposed, as the
    rewritten step with past reads them; ``AutotuneError`` naming ``path`` where one is missing."""
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    g = _Graph(rewritten.graph)
    outputs = {o.name: o for o in g.graph.output}
    for layer in range(layers):
        for side in ("decoder", "encoder"):
            name = f"present.{layer}.{side}.key"
            if name not in outputs:
                raise AutotuneError(f"{path}: no output {name}: cannot hand the next step its keys")
            inner = _renamed_producer(g, name)
            g.redirect(name, inner)
            g.added.append(helper.make_node("Transpose", [inner], [name], name=f"autotune_kv/transpose_{name}",
                                            perm=_SWAP_LAST_TWO))
            _swap_last_two_dims(outputs[name])
    rewritten.graph.node.extend(g.added)
    _sort_topologically(rewritten.graph)
    return rewritten


_SWAP_LAST_TWO = [0, 1, 3, 2]


def _input_dim(g: _Graph, name: str, index: int) -> str | int:
    dim = next(i for i in g.graph.input if i.name == name).type.tensor_type.shape.dim[index]
    return dim.dim_param or dim.dim_value


def _use_position_input(g: _Graph, path: Path) -> None:
    """The position table lookup (a ``Gather`` on a weight, indexed by shape arithmetic only)
    takes ``position_ids`` instead."""
    lookups = [n for n in g.graph.node if n.op_type == "Gather" and n.input[0] in g.initializers
               and not g.reads_input_values(n.input[1])]
    if len(lookups) != 1:
        raise AutotuneError(f"{path}: expected one position-table lookup (a Gather of a weight indexed "
                            f"by the cache length), found {len(lookups)}: cannot give it a fixed-capacity cache")
    lookups[0].input[1] = POSITION


def _beam_rows(g: _Graph) -> str:
    """``beam_rows`` clipped to the batch: the cache rows the next step continues."""
    last_row = g.op("Sub", [g.op("Gather", [g.op("Shape", [BEAM_ROWS]), g.const(np.array(0, np.int64))]),
                            g.const(np.array(1, np.int64))])
    return g.op("Max", [g.op("Min", [BEAM_ROWS, last_row]), g.const(np.array(0, np.int64))])


def _new_slot(g: _Graph) -> str:
    """``[capacity]``: true at slot ``position_ids``, where the new token's keys and values go."""
    capacity = g.op("Gather", [g.op("Shape", [CACHE_MASK]), g.const(np.array(1, np.int64))])
    slots = g.op("Range", [g.const(np.array(0, np.int64)), capacity, g.const(np.array(1, np.int64))])
    return g.op("Equal", [slots, POSITION])


def _self_attention_mask(g: _Graph, slot: str) -> str:
    """Scores to add ``[batch, 1, 1, capacity]``: 0 for filled slots and the new token's, the
    lowest float for empty slots."""
    seen = g.op("Max", [g.op("Cast", [CACHE_MASK], to=TensorProto.FLOAT), g.op("Cast", [slot], to=TensorProto.FLOAT)])
    hidden = g.op("Sub", [g.const(np.array(1.0, np.float32)), seen])
    scores = g.op("Mul", [hidden, g.const(np.array(_LOWEST, np.float32))])
    return g.op("Unsqueeze", [scores, g.const(np.array([1, 2], np.int64))])


def _cached_self_attention(g: _Graph, layer: int, rows: str, slots: dict[str, str], allowed: str, path: Path
                           ) -> None:
    """Layer ``layer``'s self-attention over the written cache: its keys (transposed) and values
    reordered by ``rows`` with the new token's at ``slots`` (per kind), empty slots masked by
    ``allowed``."""
    key, value = (f"present.{layer}.decoder.{kind}" for kind in ("key", "value"))
    outputs = {o.name for o in g.graph.output}
    concats = {name: _cache_concat(g, name) for name in (key, value)}
    for name, concat in concats.items():
        if name not in outputs or concat is None:
            raise AutotuneError(f"{path}: {name} is not the past and the new token concatenated: "
                                "cannot give it a fixed-capacity cache")
    read = _keys_read(g, concats[key].output[0])
    if read is None:
        raise AutotuneError(f"{path}: layer {layer}'s self-attention does not multiply its queries by its "
                            "keys transposed: cannot keep its cache transposed")
    grown_values = concats[value].output[0]  # what the export's attention reads (may be ``value`` itself)
    past_key = _keep_layout_for_readers(g, f"past_key_values.{layer}.decoder.key")
    new_key = g.op("Transpose", [concats[key].input[1]], perm=_SWAP_LAST_TWO)
    _score_transposed(g, read, _written(g, key, new_key, past_key, rows, slots["key"]))
    written_value = _written(g, value, concats[value].input[1], f"past_key_values.{layer}.decoder.value", rows,
                             slots["value"])
    g.redirect(grown_values, written_value)
    _mask_self_attention(g, layer, read[0], allowed, path)


def _read_keys_transposed(g: _Graph, keys: str, path: Path) -> None:
    """The cross-attention reads graph input ``keys`` as given, transposed (its scale on the queries)."""
    read = _keys_read(g, keys)
    if read is None:
        raise AutotuneError(f"{path}: the cross-attention does not multiply its queries by {keys} transposed: "
                            "cannot take its keys transposed")
    _score_transposed(g, read, _keep_layout_for_readers(g, keys))


def _keep_layout_for_readers(g: _Graph, name: str) -> str:
    """Graph input ``name`` becomes transposed; its readers in the export get it transposed back
    (only shapes are read of it once the attention reads it directly: the compiler folds those)."""
    if g.consumers.get(name):
        g.redirect(name, g.op("Transpose", [name], perm=_SWAP_LAST_TWO))
    return name


def _keys_read(g: _Graph, keys: str) -> tuple[onnx.NodeProto, tuple[str, str] | None] | None:
    """The MatMul that multiplies queries by ``keys`` transposed (through copies: ``Identity``, a
    one-input ``Concat``), and the scale of the transposed keys between them (``Mul`` or ``Div``
    by a one-element constant: its op and constant), if any."""
    for node in g.consumers.get(keys, []):
        if node.op_type == "Identity" or (node.op_type == "Concat" and len(node.input) == 1):
            found = _keys_read(g, node.output[0])
            if found is not None:
                return found
        elif node.op_type == "Transpose" and list(_attribute(node, "perm") or []) == _SWAP_LAST_TWO:
            tensor, scale = node.output[0], None
            users = g.consumers.get(tensor, [])
            constant = _scalar_operand(g, users[0], tensor) if len(users) == 1 else None
            if constant is not None:
                scale = (users[0].op_type, constant)
                tensor, users = users[0].output[0], g.consumers.get(users[0].output[0], [])
            if len(users) == 1 and users[0].op_type == "MatMul" and list(users[0].input)[1:] == [tensor]:
                return users[0], scale
    return None


def _score_transposed(g: _Graph, read: tuple, keys_transposed: str) -> None:
    """The scores' MatMul of ``read`` takes ``keys_transposed`` as is, its scale moved onto the
    queries (a scalar commutes through the product)."""
    matmul, scale = read
    if scale is not None:
        op_type, constant = scale
        matmul.input[0] = g.op(op_type, [matmul.input[0], constant])
    matmul.input[1] = keys_transposed


def _scalar_operand(g: _Graph, node: onnx.NodeProto, tensor: str) -> str | None:
    """The constant of ``node`` if it multiplies ``tensor`` by a one-element constant or divides
    ``tensor`` by one."""
    if node.op_type not in ("Mul", "Div") or len(node.input) != 2 or tensor not in node.input:
        return None
    if node.op_type == "Div" and node.input[0] != tensor:
        return None
    other = node.input[1] if node.input[0] == tensor else node.input[0]
    return other if _one_element_constant(g, other) else None


def _one_element_constant(g: _Graph, name: str) -> bool:
    if name in g.initializers:
        tensor = next(t for t in g.graph.initializer if t.name == name)
        return int(np.prod(tensor.dims)) == 1
    node = g.producer.get(name)
    value = _attribute(node, "value") if node is not None and node.op_type == "Constant" else None
    return value is not None and int(np.prod(value.dims)) == 1


def _attribute(node: onnx.NodeProto, name: str):
    attr = next((a for a in node.attribute if a.name == name), None)
    return None if attr is None else helper.get_attribute_value(attr)


def _renamed_producer(g: _Graph, name: str) -> str:
    """The node producing graph output ``name`` writes ``autotune_kv/{name}`` instead (readers of
    ``name`` read what replaces it); returns the new name."""
    inner = f"autotune_kv/{name}"
    producer = g.producer[name]
    producer.output[:] = [inner if o == name else o for o in producer.output]
    return inner


def _written(g: _Graph, present: str, new: str, past: str, rows: str, slot: str) -> str:
    """Graph output ``present``: the cache ``past`` reordered by ``rows``, ``new`` written where
    ``slot`` (the export's own grown cache renamed out of its way)."""
    _renamed_producer(g, present)
    reordered = g.op("Gather", [past, rows], axis=0)
    g.added.append(helper.make_node("Where", [slot, new, reordered], [present], name=f"autotune_kv/write_{present}"))
    return present


def _mask_self_attention(g: _Graph, layer: int, scores: onnx.NodeProto, allowed: str, path: Path) -> None:
    """Layer ``layer``'s self-attention softmax sees ``allowed`` in place of the export's mask."""
    tensor, node = scores.output[0], scores
    while node.op_type != "Softmax":
        users = g.consumers.get(tensor, [])
        if len(users) != 1 or users[0].op_type not in {"Mul", "Div", "Add", "Softmax", "Where"}:
            raise AutotuneError(f"{path}: the self-attention scores of layer {layer} do not lead to one "
                                "Softmax: cannot mask its cache slots")
        node = users[0]
        if node.op_type in ("Add", "Where"):  # the export's mask: replaced by the cache's
            node.op_type, node.input[:] = "Add", [tensor, allowed]
            del node.attribute[:]
            return
        tensor = node.output[0]
    masked = g.op("Add", [node.input[0], allowed])
    node.input[0] = masked


def _cache_concat(g: _Graph, present: str) -> onnx.NodeProto | None:
    """The ``Concat`` of past and new keys (or values) that output ``present`` is (or copies)."""
    node = g.producer.get(present)
    while node is not None and node.op_type == "Identity":
        node = g.producer.get(node.input[0])
    return node if node is not None and node.op_type == "Concat" and len(node.input) == 2 else None


def _declare_cache_dims(g: _Graph) -> None:
    """Keys declared transposed, in the step's inputs and outputs; the self-attention cache's slot
    dim is the capacity."""
    for value in [*g.graph.input, *g.graph.output]:
        if _KEYS.match(value.name):
            _swap_last_two_dims(value)
        if _DECODER_CACHE.match(value.name):
            dim = value.type.tensor_type.shape.dim[3 if value.name.endswith(".key") else 2]
            dim.Clear()
            dim.dim_param = CAPACITY


def _swap_last_two_dims(value: onnx.ValueInfoProto) -> None:
    dims = value.type.tensor_type.shape.dim
    second, last = onnx.TensorShapeProto.Dimension(), onnx.TensorShapeProto.Dimension()
    second.CopyFrom(dims[2])
    last.CopyFrom(dims[3])
    dims[2].CopyFrom(last)
    dims[3].CopyFrom(second)


def _drop_unused(graph: onnx.GraphProto) -> None:
    """Nodes none of whose outputs is read (the export's concatenations and transposes the rewrite
    bypassed), last first, then the weights no node reads."""
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    weights = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(weights)


def _sort_topologically(graph: onnx.GraphProto) -> None:
    """Nodes in an order where every input is produced before it is read (ONNX requires it)."""
    available = {t.name for t in graph.initializer} | {i.name for i in graph.input} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        waiting = []
        for node in pending:
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            raise AutotuneError("the rewritten decoder graph has a cycle")
        pending = waiting
    del graph.node[:]
    graph.node.extend(ordered)
