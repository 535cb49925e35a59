"""ONNX → Relax: load and check the file, freeze dynamic dims, simplify, import.

Every failure is an ``AutotuneError`` naming the file, the input or the op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import external_data_helper

from .errors import AutotuneError
from .runtime import sha256_of


@dataclass(frozen=True)
class TensorSpec:
    """Name, frozen shape and dtype of a model input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def as_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


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
    if not path.is_file():
        raise AutotuneError(f"model file not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf raises DecodeError and friends
        raise AutotuneError(f"{path} is not a valid ONNX model: {str(err)[:200]}") from None
    if not model.graph.node and not model.graph.input:
        raise AutotuneError(f"{path} is not a valid ONNX model: the graph is empty")
    _load_external_data_safely(model, path)
    return model


def _load_external_data_safely(model: onnx.ModelProto, path: Path) -> None:
    """Load external tensors only from files inside the model's own folder."""
    base = path.resolve().parent
    for tensor in external_data_helper._get_all_tensors(model):
        if not external_data_helper.uses_external_data(tensor):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (base / location).resolve()
        if os.path.isabs(location) or base not in target.parents or not target.is_file():
            raise AutotuneError(f"{path}: tensor {tensor.name!r} has external data at {location!r}, "
                                "outside the model's folder or missing; refusing to read it")
    try:
        external_data_helper.load_external_data_for_model(model, str(base))
    except Exception as err:
        raise AutotuneError(f"{path}: cannot load external data: {str(err)[:200]}") from None


def _check(model: onnx.ModelProto, path: Path) -> None:
    try:
        onnx.checker.check_model(model, full_check=False)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise AutotuneError(f"{path} fails the ONNX checker: {first[:300]}") from None


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


def _simplify(model: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    import onnxsim

    try:
        simplified, ok = onnxsim.simplify(model, perform_optimization=False)
    except Exception as err:
        raise AutotuneError(f"{path}: cannot simplify the frozen graph: {str(err)[:300]}") from None
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
    from tvm.relax.frontend.onnx import from_onnx

    try:
        return from_onnx(model, keep_params_in_input=False)
    except Exception as err:
        raise AutotuneError(f"{path}: TVM cannot import the model: {str(err).splitlines()[0][:300]}"
                            ) from None


def load_model(path: str | Path, shapes: dict[str, tuple[int, ...]] | None = None) -> ImportedModel:
    """Load, check, freeze, simplify and import an ONNX model."""
    path = Path(path)
    model = _read_model(path)
    _check(model, path)
    freeze_shapes(model, shapes or {}, path)
    model = _simplify(model, path)
    _check_supported_ops(model, path)
    model = onnx.shape_inference.infer_shapes(model)
    inputs = [_spec(v, path) for v in _graph_inputs(model)]
    outputs = [_spec(v, path) for v in model.graph.output]
    return ImportedModel(path=path, sha256=sha256_of(path), onnx_model=model, inputs=inputs,
                         outputs=outputs, relax_mod=_to_relax(model, path))


def random_inputs(specs: list[TensorSpec], seed: int = 0, int_high: int = 32) -> dict[str, np.ndarray]:
    """Random inputs for a model: integers in ``[0, int_high)`` (token ids), normals for floats."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in specs:
        if spec.dtype.startswith("int"):
            arrays[spec.name] = rng.integers(0, int_high, spec.shape).astype(spec.dtype)
        elif spec.dtype == "bool":
            arrays[spec.name] = np.ones(spec.shape, dtype=bool)
        else:
            arrays[spec.name] = rng.standard_normal(spec.shape).astype(spec.dtype)
    return arrays
