"""Reading an ONNX file safely: parse, load external data only from the model's own folder and
only as much as the file backs, then check opset, types, acyclicity, the ONNX checker and strict
shape inference. Every failure is an ``AutotuneError`` naming the file and the tensor or node.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import onnx
from onnx import external_data_helper

from ..common.text import one_line
from ..errors import AutotuneError


def read_model(path: Path) -> onnx.ModelProto:
    """Parse the file and load its external data, refusing size claims the files do not back."""
    if not path.is_file():
        raise AutotuneError(f"model file not found: {path}")
    if path.stat().st_size == 0:
        raise AutotuneError(f"{path} is not a valid ONNX model: the file is empty")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf raises DecodeError and friends
        raise AutotuneError(f"{path} is not a valid ONNX model: {one_line(err, 200)}") from None
    if not model.graph.node and not model.graph.input:
        raise AutotuneError(f"{path} is not a valid ONNX model: the graph is empty")
    for tensor in external_data_helper._get_all_tensors(model):
        if not external_data_helper.uses_external_data(tensor):
            _check_inline_claim(tensor, path)
    _load_external_data_safely(model, path)
    return model


#: Bits per element of the packed types (newer ones looked up by name, as older onnx lacks them).
_SUB_BYTE_BITS = {getattr(onnx.TensorProto, name, -1): bits for name, bits in [
    ("INT4", 4), ("UINT4", 4), ("FLOAT4E2M1", 4), ("INT2", 2), ("UINT2", 2), ("FLOAT6E2M3", 6),
    ("FLOAT6E3M2", 6)]}
_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data",
                 "uint64_data")


def _claimed_bytes(tensor: onnx.TensorProto) -> int | None:
    """Bytes that ``tensor``'s dims and type claim; None for strings and unknown types."""
    count = 1
    for dim in tensor.dims:
        count *= max(int(dim), 0)
    bits = _SUB_BYTE_BITS.get(tensor.data_type)
    if bits is None and tensor.data_type != onnx.TensorProto.STRING:
        try:
            bits = 8 * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        except Exception:  # UNDEFINED or a number no type has: the checker names it
            return None
    return None if bits is None else (count * bits + 7) // 8


def _claim(tensor: onnx.TensorProto, claimed: int) -> str:
    dtype = onnx.TensorProto.DataType.Name(tensor.data_type)
    return f"tensor {tensor.name!r} claims {claimed} bytes ({dtype} {list(tensor.dims)})"


def _check_inline_claim(tensor: onnx.TensorProto, path: Path) -> None:
    """Refuse a tensor whose dims claim other than the data the file holds for it, before
    anything allocates the claimed size."""
    claimed = _claimed_bytes(tensor)
    if claimed is None:
        return
    if tensor.raw_data and len(tensor.raw_data) != claimed:
        raise AutotuneError(f"{path}: {_claim(tensor, claimed)} but its raw data in the file is "
                            f"{len(tensor.raw_data)} bytes")
    values = sum(len(getattr(tensor, name)) for name in _TYPED_FIELDS)
    if not tensor.raw_data and claimed > 8 * values:  # 8 bytes: the widest value a field holds
        raise AutotuneError(f"{path}: {_claim(tensor, claimed)} but the file holds only "
                            f"{values} values")


def _external_info(tensor: onnx.TensorProto, path: Path) -> tuple[str, int, int | None]:
    """``(location, offset, length)`` of an external tensor; malformed numbers are an error."""
    info = {entry.key: entry.value for entry in tensor.external_data}
    try:
        offset = int(info.get("offset") or 0)
        length = int(info["length"]) if info.get("length") else None
    except ValueError:
        offset = length = -1
    if offset < 0 or (length is not None and length < 0):
        raise AutotuneError(f"{path}: tensor {tensor.name!r} has a malformed external data offset "
                            f"{info.get('offset')!r} or length {info.get('length')!r}")
    return info.get("location", ""), offset, length


def _load_external_data_safely(model: onnx.ModelProto, path: Path) -> None:
    """Load external tensors only from files inside the model's own folder that hold every byte
    the tensor claims."""
    base = path.resolve().parent
    for tensor in external_data_helper._get_all_tensors(model):
        if external_data_helper.uses_external_data(tensor):
            _check_external_tensor(tensor, base, path)
    try:
        external_data_helper.load_external_data_for_model(model, str(base))
    except Exception as err:
        raise AutotuneError(f"{path}: cannot load external data: {one_line(err, 200)}") from None


def _check_external_tensor(tensor: onnx.TensorProto, base: Path, path: Path) -> None:
    """The tensor's external file is inside ``base`` and holds what the tensor claims."""
    location, offset, length = _external_info(tensor, path)
    try:
        target = (base / location).resolve()
        inside = not os.path.isabs(location) and base in target.parents and target.is_file()
    except (OSError, ValueError):  # a NUL byte, a name too long for the file system
        inside = False
    if not inside:
        raise AutotuneError(f"{path}: tensor {tensor.name!r} has external data at {location!r}, "
                            "outside the model's folder or missing; refusing to read it")
    claimed = _claimed_bytes(tensor)
    wanted = max(length or 0, claimed or 0)
    available = max(target.stat().st_size - offset, 0)
    if wanted > available:
        raise AutotuneError(f"{path}: tensor {tensor.name!r} claims {wanted} bytes of external data "
                            f"at offset {offset} of {location!r}, which holds only {available}")
    if claimed is not None and length is not None and length != claimed:
        raise AutotuneError(f"{path}: {_claim(tensor, claimed)} but its external data is "
                            f"{length} bytes long")


_KNOWN_TYPES = set(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}


def check_model(model: onnx.ModelProto, path: Path) -> None:
    """Opset and element types are known here, the graph is acyclic, the ONNX checker passes."""
    newest = onnx.defs.onnx_opset_version()
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version > newest:
            raise AutotuneError(f"{path} uses ONNX opset {opset.version}, newer than the newest "
                                f"this installation knows ({newest})")
    for value in [*model.graph.input, *model.graph.output]:
        elem_type = value.type.tensor_type.elem_type
        if value.type.HasField("tensor_type") and elem_type not in _KNOWN_TYPES:
            raise AutotuneError(f"{path}: tensor {value.name!r} has unknown element type {elem_type}")
    cycle = _find_cycle(model.graph)
    if cycle:
        names = [_node_name(model.graph, i) for i in cycle]
        raise AutotuneError(f"{path}: graph has a cycle through node {names[0]!r} "
                            f"({' -> '.join([*names, names[0]])})")
    try:
        onnx.checker.check_model(model, full_check=False)
    except Exception as err:
        raise AutotuneError(f"{path} fails the ONNX checker: {one_line(err, 300)}") from None


def _node_name(graph: onnx.GraphProto, index: int) -> str:
    """The node's name, or its op type and position when it has none."""
    return graph.node[index].name or f"{graph.node[index].op_type}#{index}"


def _find_cycle(graph: onnx.GraphProto) -> list[int] | None:
    """Indices of the nodes on one cycle, in data-flow order, or None when the graph has none."""
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    state: dict[int, str] = {}  # "open" while on the current trail, then "done"
    for start in range(len(graph.node)):
        if start in state:
            continue
        trail, pending = [start], [list(graph.node[start].input)]  # trail[i + 1] feeds trail[i]
        state[start] = "open"
        while trail:
            if not pending[-1]:
                state[trail.pop()] = "done"
                pending.pop()
                continue
            nxt = producer.get(pending[-1].pop(), -1)
            if state.get(nxt) == "open":
                loop = trail[trail.index(nxt):]
                return [loop[0], *reversed(loop[1:])]
            if nxt != -1 and nxt not in state:
                state[nxt] = "open"
                trail.append(nxt)
                pending.append(list(graph.node[nxt].input))
    return None


def infer_shapes_strictly(model: onnx.ModelProto, path: Path) -> None:
    """ONNX shape inference in strict mode on the frozen graph; an error names the first bad node."""
    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as err:
        text = one_line(err, 400)
        found = re.search(r"\(op_type:([^,]*), node name: ([^)]*)\): (.*?)(?: \(op_type:|$)", text)
        if not found:
            raise AutotuneError(f"{path}: shape inference fails: {text}") from None
        op_type, node, detail = found.groups()
        detail = re.sub(r"\[\w+Error\]\s*", "", detail)
        raise AutotuneError(f"{path}: shapes do not agree at node {node!r} ({op_type}): "
                            f"{one_line(detail, 200)}") from None


def onnxruntime_session(model_path: Path, threads: int):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def _initializer_names(model: onnx.ModelProto) -> set[str]:
    return {init.name for init in model.graph.initializer}


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph's inputs the caller feeds (not initializers)."""
    inits = _initializer_names(model)
    return [inp for inp in model.graph.input if inp.name not in inits]
