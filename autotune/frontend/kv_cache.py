"""The decoder step with past, rewritten to read and write a KV cache of fixed capacity.

An export's ``decoder_with_past_model.onnx`` takes a cache as long as the tokens so far and reads
that length from the cache's shape: the new token's position, its attention mask, the grown cache
``present.*`` one longer. Compiled kernels want static shapes, and a cache padded to a capacity
would make the graph think the padding is past. This rewrite keeps the export's graph and gives it:

* ``position_ids [1]``: the new token's position (the tokens already cached); it replaces the
  index the export computes from the cache's shape where it looks up its position table;
* ``cache_mask [batch, capacity]``: 1 where the cache holds a token; the self-attention of every
  layer masks the other slots (the new token is always seen);
* ``beam_rows [batch]``: the cache row each row continues (beam search reorders beams in place);
* ``present.{i}.decoder.*`` of the capacity's length: the cache with the new token's keys and
  values written at slot ``position_ids``.

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
_PASS_THROUGH = {"Transpose", "Mul", "Div", "Reshape", "Identity", "Cast"}  # between a key and its scores
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
    capacity; ``AutotuneError`` naming ``path`` where its graph does not have the expected form."""
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    g = _Graph(rewritten.graph)
    batch = _input_dim(g, "input_ids", 0)
    g.graph.input.extend([
        helper.make_tensor_value_info(POSITION, TensorProto.INT64, [1]),
        helper.make_tensor_value_info(CACHE_MASK, TensorProto.INT64, [batch, CAPACITY]),
        helper.make_tensor_value_info(BEAM_ROWS, TensorProto.INT64, [batch])])
    _use_position_input(g, path)
    _reorder_beams(g, layers)
    allowed = _self_attention_mask(g)
    for layer in range(layers):
        _mask_self_attention(g, layer, allowed, path)
    _write_new_slot(g, layers, path)
    _set_capacity_dims(g)
    rewritten.graph.node.extend(g.added)
    _sort_topologically(rewritten.graph)
    return rewritten


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


def _reorder_beams(g: _Graph, layers: int) -> None:
    """Every read of the self-attention cache goes through ``beam_rows`` (clipped to the batch)."""
    last_row = g.op("Sub", [g.op("Gather", [g.op("Shape", [BEAM_ROWS]), g.const(np.array(0, np.int64))]),
                            g.const(np.array(1, np.int64))])
    rows = g.op("Max", [g.op("Min", [BEAM_ROWS, last_row]), g.const(np.array(0, np.int64))])
    for layer in range(layers):
        for kind in ("key", "value"):
            name = f"past_key_values.{layer}.decoder.{kind}"
            reordered = g.op("Gather", [name, rows], axis=0)
            for node in g.consumers.get(name, []):
                node.input[:] = [reordered if i == name else i for i in node.input]


def _self_attention_mask(g: _Graph) -> str:
    """Scores to add ``[batch, 1, 1, capacity + 1]``: 0 for filled slots and the new token, the
    lowest float for empty slots."""
    ones = g.op("ConstantOfShape", [g.op("Shape", [BEAM_ROWS])],
                value=numpy_helper.from_array(np.array([1], np.int64)))
    seen = g.op("Concat", [CACHE_MASK, g.op("Unsqueeze", [ones, g.const(np.array([1], np.int64))])], axis=1)
    hidden = g.op("Sub", [g.const(np.array(1.0, np.float32)), g.op("Cast", [seen], to=TensorProto.FLOAT)])
    scores = g.op("Mul", [hidden, g.const(np.array(_LOWEST, np.float32))])
    return g.op("Unsqueeze", [scores, g.const(np.array([1, 2], np.int64))])


def _mask_self_attention(g: _Graph, layer: int, allowed: str, path: Path) -> None:
    """Layer ``layer``'s self-attention softmax sees ``allowed`` in place of the export's mask."""
    key = f"present.{layer}.decoder.key"
    concat = _cache_concat(g, key)
    matmul = _scores_of(g, concat.output[0]) if concat is not None else None
    if matmul is None:
        raise AutotuneError(f"{path}: no attention scores read {key}: cannot mask its cache slots")
    tensor, node = matmul.output[0], matmul
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


def _scores_of(g: _Graph, key: str) -> onnx.NodeProto | None:
    """The MatMul that multiplies queries with ``key`` (through transposes and scalings)."""
    frontier = [key]
    while frontier:
        tensor = frontier.pop()
        for node in g.consumers.get(tensor, []):
            if node.op_type == "MatMul":
                return node
            if node.op_type in _PASS_THROUGH:
                frontier.append(node.output[0])
    return None


def _write_new_slot(g: _Graph, layers: int, path: Path) -> None:
    """``present.{i}.decoder.*`` become the cache (capacity long) with the new token's keys and
    values at slot ``position_ids``; the attention still reads the cache and the new token."""
    slot = None
    outputs = {o.name for o in g.graph.output}
    for layer in range(layers):
        for kind in ("key", "value"):
            name = f"present.{layer}.decoder.{kind}"
            concat = _cache_concat(g, name)
            if name not in outputs or concat is None:
                raise AutotuneError(f"{path}: {name} is not the past and the new token concatenated: "
                                    "cannot give it a fixed-capacity cache")
            past, new = concat.input
            inner = f"autotune_kv/{name}"
            g.producer[name].output[0] = inner
            for node in g.consumers.get(name, []):
                node.input[:] = [inner if i == name else i for i in node.input]
            slot = slot or _slot_mask(g, past)
            g.added.append(helper.make_node("Where", [slot, new, past], [name], name=f"autotune_kv/write_{name}"))


def _slot_mask(g: _Graph, cache: str) -> str:
    """``[1, 1, capacity, 1]``: true at slot ``position_ids``."""
    capacity = g.op("Gather", [g.op("Shape", [cache]), g.const(np.array(2, np.int64))])
    slots = g.op("Range", [g.const(np.array(0, np.int64)), capacity, g.const(np.array(1, np.int64))])
    here = g.op("Equal", [slots, POSITION])
    return g.op("Reshape", [here, g.const(np.array([1, 1, -1, 1], np.int64))])


def _set_capacity_dims(g: _Graph) -> None:
    """The self-attention cache's length dim is the capacity, in its inputs and outputs alike."""
    for value in [*g.graph.input, *g.graph.output]:
        if _DECODER_CACHE.match(value.name):
            value.type.tensor_type.shape.dim[2].Clear()
            value.type.tensor_type.shape.dim[2].dim_param = CAPACITY


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
