"""ONNX → Relax: freeze dynamic dims, simplify, check the ops, import; the model's input specs.

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

import onnx

from ..common.files import sha256_of
from ..common.text import one_line
from ..errors import AutotuneError
from .guards import index_bounds
from .buckets import ROW_TILE, DimRange, ShapePlan, as_dims, parse_dims
from .onnx_file import check_model, graph_inputs, infer_shapes_strictly, read_model
from .specs import TensorSpec


@dataclass
class ImportedModel:
    """A frozen, simplified ONNX model and its Relax import."""

    path: Path
    sha256: str
    onnx_model: onnx.ModelProto
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    relax_mod: object = field(repr=False)
    plan: ShapePlan | None = None  # a range of shapes: the buckets' plan; None: the static shapes

    @property
    def name(self) -> str:
        return self.path.stem

    def input_shapes(self) -> dict[str, list[int] | str]:
        """Each input's shape, or its range (``1..8x1..128``)."""
        return {spec.name: spec.range_text() if spec.ranges else list(spec.shape) for spec in self.inputs}


def parse_shape(text: str) -> tuple[str, tuple[DimRange, ...]]:
    """``input_ids=1x128`` → ``("input_ids", (1, 128))`` as ``DimRange``s; ``1..8x1..128`` ranges."""
    name, sep, dims = text.partition("=")
    if not sep or not name or not dims:
        raise AutotuneError(f"bad --shape {text!r}: expected NAME=DIMxDIM..., e.g. input_ids=1x128 "
                            "or input_ids=1..8x1..128")
    return name, parse_dims(dims, f"--shape {text!r}")


def freeze_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], path: Path) -> None:
    """Set every dynamic dim of every input, from ``shapes`` or an error naming the input."""
    inputs = {inp.name: inp for inp in graph_inputs(model)}
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
        raise AutotuneError(f"{path}: cannot simplify the frozen graph: {one_line(err, 300)}"
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
    return one_line(text, 300)


def load_model(path: str | Path, shapes: dict | None = None, for_tuning: bool = False,
               tune_shapes: str | None = None, rung_unit: int = ROW_TILE) -> ImportedModel:
    """Load, check, freeze, simplify and import an ONNX model.

    ``shapes`` maps an input to its shape: ints (``(1, 128)``), or ranges per dim (``((1, 8), (1,
    128))``, ``"1..8x1..128"``): then the module holds one entry function per bucket (all of them,
    or, ``for_tuning``, those covering ``tune_shapes``, e.g. ``"1x32,8x128"``; see
    ``frontend.ranged``), their sequence rungs multiples of ``rung_unit``.
    """
    from .ranged import is_ranged

    try:
        dims = {name: as_dims(shape, f"--shape {name}") for name, shape in (shapes or {}).items()}
        if is_ranged(dims):
            from .ranged import load_ranged

            return load_ranged(Path(path), dims, _load, for_tuning, tune_shapes, rung_unit)
        if tune_shapes:
            raise AutotuneError("--tune-shapes needs a range in --shape (e.g. input_ids=1..8x1..128)")
        return _load(Path(path), {name: tuple(d.low for d in shape) for name, shape in dims.items()})
    except AutotuneError as err:  # names from the file may hold line breaks: keep it one line
        raise AutotuneError(" ".join(str(err).splitlines())) from None


def _load(path: Path, shapes: dict[str, tuple[int, ...]] | None) -> ImportedModel:
    """The steps of ``load_model``, each raising ``AutotuneError`` on a bad file."""
    model = read_model(path)
    check_model(model, path)
    freeze_shapes(model, shapes or {}, path)
    infer_shapes_strictly(model, path)
    model = _simplify(model, path)
    _check_supported_ops(model, path)
    model = onnx.shape_inference.infer_shapes(model)
    relax_mod = _to_relax(model, path)
    bounds = index_bounds(relax_mod["main"])
    inputs = [_with_index_range(_spec(v, path), bounds.get(v.name)) for v in graph_inputs(model)]
    outputs = [_spec(v, path) for v in model.graph.output]
    return ImportedModel(path=path, sha256=sha256_of(path), onnx_model=model, inputs=inputs,
                         outputs=outputs, relax_mod=relax_mod)


def _with_index_range(spec: TensorSpec, rows: int | None) -> TensorSpec:
    """``spec`` with the index range of an input that indexes tables of ``rows`` rows at the least."""
    return spec if rows is None else replace(spec, index_range=(-rows, rows - 1))
