"""ONNX → Relax: load and check the file, freeze dynamic dims, simplify, import.

Every failure is an ``AutotuneError`` naming the file, the input or the op.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import external_data_helper

from .errors import AutotuneError
from .guards import index_bounds
from .runtime import check_index_range, sha256_of


@dataclass(frozen=True)
class TensorSpec:
    """Name, frozen shape and dtype of a model input or output.

    ``index_range`` is ``(low, high)``, inclusive, for an integer input that indexes a table (token,
    position, token-type ids): the values the model accepts, as ONNX's ``Gather`` defines them.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    index_range: tuple[int, int] | None = None

    def as_dict(self) -> dict:
        spec = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.index_range is not None:
            spec["index_range"] = list(self.index_range)
        return spec

    @classmethod
    def from_dict(cls, spec: dict) -> TensorSpec:
        """The spec a manifest records (``as_dict``'s output)."""
        index_range = spec.get("index_range")
        return cls(spec["name"], tuple(spec["shape"]), spec["dtype"],
                   tuple(index_range) if index_range else None)


@dataclass
class ImportedModel:
    """A frozen, simplified ONNX model and its Relax import."""

    path: Path
    sha256: str
    onnx_model: onnx.ModelProto
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    relax_mod: object = field(repr=False)

    @property
    def name(self) -> str:
        return self.path.stem

    def input_shapes(self) -> dict[str, list[int]]:
        return {spec.name: list(spec.shape) for spec in self.inputs}


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``input_ids=1x128`` → ``("input_ids", (1, 128))``."""
    name, sep, dims = text.partition("=")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        shape = ()
    if not sep or not name or not shape or min(shape) < 1:
        raise AutotuneError(f"bad --shape {text!r}: expected NAME=DIMxDIM..., e.g. input_ids=1x128")
    return name, shape


def _read_model(path: Path) -> onnx.ModelProto:
    """Parse the file and load its external data, refusing size claims the files do not back."""
    if not path.is_file():
        raise AutotuneError(f"model file not found: {path}")
    if path.stat().st_size == 0:
        raise AutotuneError(f"{path} is not a valid ONNX model: the file is empty")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf raises DecodeError and friends
        raise AutotuneError(f"{path} is not a valid ONNX model: {_one_line(err, 200)}") from None
    if not model.graph.node and not model.graph.input:
        raise AutotuneError(f"{path} is not a valid ONNX model: the graph is empty")
    for tensor in external_data_helper._get_all_tensors(model):
        if not external_data_helper.uses_external_data(tensor):
            _check_inline_claim(tensor, path)
    _load_external_data_safely(model, path)
    return model


def _one_line(err: BaseException | str, limit: int) -> str:
    """``err`` as one line of at most ``limit`` characters (its type name when it has no text)."""
    text = " ".join(str(err).split())
    if not text and isinstance(err, BaseException):
        text = type(err).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
        raise AutotuneError(f"{path}: cannot load external data: {_one_line(err, 200)}") from None


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


def _check(model: onnx.ModelProto, path: Path) -> None:
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
        raise AutotuneError(f"{path} fails the ONNX checker: {_one_line(err, 300)}") from None


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


def _infer_shapes_strictly(model: onnx.ModelProto, path: Path) -> None:
    """ONNX shape inference in strict mode on the frozen graph; an error names the first bad node."""
    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as err:
        text = _one_line(err, 400)
        found = re.search(r"\(op_type:([^,]*), node name: ([^)]*)\): (.*?)(?: \(op_type:|$)", text)
        if not found:
            raise AutotuneError(f"{path}: shape inference fails: {text}") from None
        op_type, node, detail = found.groups()
        detail = re.sub(r"\[\w+Error\]\s*", "", detail)
        raise AutotuneError(f"{path}: shapes do not agree at node {node!r} ({op_type}): "
                            f"{_one_line(detail, 200)}") from None


def _initializer_names(model: onnx.ModelProto) -> set[str]:
    return {init.name for init in model.graph.initializer}


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = _initializer_names(model)
    return [inp for inp in model.graph.input if inp.name not in inits]


def freeze_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], path: Path) -> None:
    """Set every dynamic dim of every input, from ``shapes`` or an error naming the input."""
    inputs = {inp.name: inp for inp in _graph_inputs(model)}
    for name in shapes:
        if name not in inputs:
            raise AutotuneError(f"--shape names input {name!r}, which {path} does not have "
                                f"(inputs: {', '.join(inputs)})")
    for name, inp in inputs.items():
        dims = inp.type.tensor_type.shape.dim
        if name in shapes:
            if len(shapes[name]) != len(dims):
                raise AutotuneError(f"--shape {name} has {len(shapes[name])} dims, but input "
                                    f"{name!r} of {path} has rank {len(dims)}")
            for dim, value in zip(dims, shapes[name]):
                if dim.HasField("dim_value") and dim.dim_value not in (0, value):
                    raise AutotuneError(f"--shape {name}: dim {dim.dim_value} of {path} is fixed, "
                                        f"cannot set it to {value}")
                dim.dim_value = value
        elif any(not d.HasField("dim_value") or d.dim_value <= 0 for d in dims):
            symbolic = [d.dim_param or "?" for d in dims]
            raise AutotuneError(f"input {name!r} of {path} has dynamic dims {symbolic}: "
                                f"give --shape {name}={'x'.join('N' for _ in dims)}")


@contextlib.contextmanager
def capture_native_stderr(into: list[bytes] | None = None) -> Iterator[None]:
    """Send what C++ code writes to file descriptor 2 to a scratch file while the block runs
    (appended to ``into`` afterwards, when given): onnxsim logs every constant it fails to fold
    (with Python tracebacks, megabytes for a broken model) and TVM warns about half-built blocks;
    the user gets one clear line instead."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to protect
        yield
        return
    try:
        with tempfile.TemporaryFile() as scratch:
            os.dup2(scratch.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                if into is not None:
                    scratch.seek(0)
                    into.append(scratch.read())
    finally:
        os.close(saved)


def _simplify(model: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    import onnxsim

    try:
        with capture_native_stderr():
            simplified, ok = onnxsim.simplify(model, perform_optimization=False)
    except Exception as err:
        raise AutotuneError(f"{path}: cannot simplify the frozen graph: {_one_line(err, 300)}"
                            ) from None
    if not ok:
        raise AutotuneError(f"{path}: simplified graph does not match the original")
    return simplified


def _check_supported_ops(model: onnx.ModelProto, path: Path) -> None:
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    supported = _get_convert_map()
    for node in model.graph.node:
        if node.op_type not in supported:
            raise AutotuneError(f"{path}: op {node.op_type!r} (node {node.name!r}) is not supported "
                                "by TVM's ONNX importer")


_ONNX_TO_NUMPY = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT64: "int64",
                  onnx.TensorProto.INT32: "int32", onnx.TensorProto.FLOAT16: "float16",
                  onnx.TensorProto.BOOL: "bool", onnx.TensorProto.DOUBLE: "float64"}


def _spec(value: onnx.ValueInfoProto, path: Path) -> TensorSpec:
    tensor_type = value.type.tensor_type
    dtype = _ONNX_TO_NUMPY.get(tensor_type.elem_type)
    if dtype is None:
        raise AutotuneError(f"{path}: tensor {value.name!r} has unsupported element type "
                            f"{onnx.TensorProto.DataType.Name(tensor_type.elem_type)}")
    shape = tuple(d.dim_value for d in tensor_type.shape.dim)
    if any(d <= 0 for d in shape):
        raise AutotuneError(f"{path}: cannot infer a static shape for {value.name!r}")
    return TensorSpec(value.name, shape, dtype)


def _to_relax(model: onnx.ModelProto, path: Path):
    """The Relax module of ``model``; TVM's print of the failing operator becomes part of the
    one-line error, and its native warnings about the half-built module stay off stderr."""
    from tvm.relax.frontend.onnx import from_onnx

    printed, failure = io.StringIO(), None
    with contextlib.redirect_stdout(printed), capture_native_stderr():
        try:
            module = from_onnx(model, keep_params_in_input=False)
        except Exception as err:
            failure = _tvm_reason(err)
        if failure is not None:
            gc.collect()  # TVM warns as it frees the half-built module: let that happen muted
    if failure is not None:
        found = re.search(r"Error converting operator (\S+?),", printed.getvalue())
        where = f" at op {found.group(1)!r}" if found else ""
        raise AutotuneError(f"{path}: TVM cannot import the model{where}: {failure}")
    sys.stdout.write(printed.getvalue())
    return module


def _tvm_reason(err: Exception) -> str:
    """TVM's error text without the op's full repr and the metadata notes it embeds."""
    text = re.sub(r'(?:In )?ir\.Op\(.*?name="([^"]+)".*?support_level=\d+\)(,?) ',
                  lambda m: m[1] + (": " if m[2] else " "), str(err), flags=re.S)
    text = text.replace("# Metadata omitted. Use show_meta=True in script() method to show it.", "")
    return _one_line(text, 300)


def load_model(path: str | Path, shapes: dict[str, tuple[int, ...]] | None = None) -> ImportedModel:
    """Load, check, freeze, simplify and import an ONNX model."""
    try:
        return _load(Path(path), shapes)
    except AutotuneError as err:  # names from the file may hold line breaks: keep it one line
        raise AutotuneError(" ".join(str(err).splitlines())) from None


def _load(path: Path, shapes: dict[str, tuple[int, ...]] | None) -> ImportedModel:
    """The steps of ``load_model``, each raising ``AutotuneError`` on a bad file."""
    model = _read_model(path)
    _check(model, path)
    freeze_shapes(model, shapes or {}, path)
    _infer_shapes_strictly(model, path)
    model = _simplify(model, path)
    _check_supported_ops(model, path)
    model = onnx.shape_inference.infer_shapes(model)
    relax_mod = _to_relax(model, path)
    bounds = index_bounds(relax_mod["main"])
    inputs = [_with_index_range(_spec(v, path), bounds.get(v.name)) for v in _graph_inputs(model)]
    outputs = [_spec(v, path) for v in model.graph.output]
    return ImportedModel(path=path, sha256=sha256_of(path), onnx_model=model, inputs=inputs,
                         outputs=outputs, relax_mod=relax_mod)


def _with_index_range(spec: TensorSpec, rows: int | None) -> TensorSpec:
    """``spec`` with the index range of an input that indexes tables of ``rows`` rows at the least."""
    return spec if rows is None else replace(spec, index_range=(-rows, rows - 1))


MASK_HINT = "mask"  # an integer or boolean input named like this is an attention mask
OTHER_INT_HIGH = 32  # integers that neither index a table nor mask: small non-negative values


def random_inputs(specs: list[TensorSpec], seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs the model accepts: table indices within the tables they index, attention masks as
    ones with some padding at the end of all rows but the first, normals for floats."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in specs:
        if spec.index_range is not None:
            arrays[spec.name] = rng.integers(0, spec.index_range[1] + 1, spec.shape).astype(spec.dtype)
        elif MASK_HINT in spec.name.lower() and (spec.dtype.startswith("int") or spec.dtype == "bool"):
            arrays[spec.name] = padded_mask(spec.shape, spec.dtype)
        elif spec.dtype.startswith("int"):
            arrays[spec.name] = rng.integers(0, OTHER_INT_HIGH, spec.shape).astype(spec.dtype)
        elif spec.dtype == "bool":
            arrays[spec.name] = np.ones(spec.shape, dtype=bool)
        else:
            arrays[spec.name] = rng.standard_normal(spec.shape).astype(spec.dtype)
    return arrays


def manifest_inputs(manifest: dict) -> tuple[list[TensorSpec], dict[str, np.ndarray]]:
    """The input specs a manifest records, and inputs the model accepts (``random_inputs``)."""
    specs = [TensorSpec.from_dict(spec) for spec in manifest["inputs"]]
    return specs, random_inputs(specs)


def padded_mask(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """A ``[batch, seq]``-like mask of ones whose row ``r`` ends in ``r × seq / (2 × batch)`` zeros
    (the first row unpadded, none padded to half or more), as a batch of sentences of several
    lengths sends."""
    mask = np.ones(shape, dtype=dtype)
    if len(shape) >= 2:
        rows, seq = shape[0], shape[-1]
        for row in range(1, rows):
            mask[row, ..., seq - row * seq // (2 * rows):] = 0
    return mask


def inputs_from_file(path: str | Path, specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """The user's inputs from an ``.npz`` file, one array per input name, checked against ``specs``."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as err:
        raise AutotuneError(f"cannot read inputs --inputs {path}: {_one_line(err, 200)}") from None
    expected = [spec.name for spec in specs]
    if sorted(arrays) != sorted(expected):
        raise AutotuneError(f"--inputs {path} holds arrays {sorted(arrays)}, the model takes {expected}")
    for spec in specs:
        array = arrays[spec.name]
        if tuple(array.shape) != spec.shape or str(array.dtype) != spec.dtype:
            raise AutotuneError(f"--inputs {path}: array {spec.name!r} is {array.dtype}{list(array.shape)}, "
                                f"the model takes {spec.dtype}{list(spec.shape)}")
        check_index_range(spec.as_dict(), array, f"--inputs {path}: array")
    return arrays
