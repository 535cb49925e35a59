"""A corpus of broken ONNX inputs, built in code (``onnx.helper``, no download).

Each builder writes one file into a folder and returns its path; ``CORPUS`` maps a case name to
its builder and to a substring the one-line ``AutotuneError`` for it must contain.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _value(name: str, shape: list[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
           outputs: list[onnx.ValueInfoProto],
           initializers: list[onnx.TensorProto] = ()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "bad", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def valid_model(rows: int = 16, cols: int = 16) -> onnx.ModelProto:
    """A small valid model: ``relu(x @ w + b)`` with static shapes and float initializers."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((rows, cols)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal((cols,)).astype(np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"], name="matmul_0"),
             helper.make_node("Add", ["xw", "b"], ["xwb"], name="add_0"),
             helper.make_node("Relu", ["xwb"], ["y"], name="relu_0")]
    return _model(nodes, [_value("x", [1, rows])], [_value("y", [1, cols])], [weight, bias])


def write_valid(folder: Path) -> Path:
    """The valid model the broken ones are derived from."""
    return _save(valid_model(), folder / "valid.onnx")


def write_empty(folder: Path) -> Path:
    """A zero-byte file."""
    path = folder / "empty.onnx"
    path.write_bytes(b"")
    return path


def write_random_bytes(folder: Path) -> Path:
    """4 KiB of seeded random bytes."""
    path = folder / "random.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def write_truncated(folder: Path) -> Path:
    """The valid model cut in the middle of its weight's raw data."""
    data = valid_model(rows=64, cols=64).SerializeToString()
    path = folder / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    return path


def write_truncated_at_field(folder: Path) -> Path:
    """A prefix of the valid model that still parses: it ends where ``opset_import`` (the last
    field written) begins, so only the checker can tell."""
    full = valid_model()
    data = full.SerializeToString()
    full.ClearField("opset_import")
    prefix = full.SerializeToString()
    assert data.startswith(prefix) and len(prefix) < len(data)
    path = folder / "truncated_at_field.onnx"
    path.write_bytes(prefix)
    return path


def write_unsupported_op(folder: Path) -> Path:
    """A valid model whose one op (``Celu``) TVM's ONNX importer does not convert."""
    node = helper.make_node("Celu", ["x"], ["y"], name="celu_0")
    return _save(_model([node], [_value("x", [1, 4])], [_value("y", [1, 4])]),
                 folder / "unsupported_op.onnx")


def write_external_traversal(folder: Path) -> Path:
    """An initializer whose external data lives at ``../../etc/passwd``."""
    model = valid_model()
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in [("location", "../../etc/passwd"), ("offset", "0"), ("length", "1024")]:
        weight.external_data.add(key=key, value=value)
    return _save(model, folder / "external_traversal.onnx")


def write_matmul_mismatch(folder: Path) -> Path:
    """MatMul of static shapes [1, 4] x [5, 3]: inner dims differ."""
    weight = numpy_helper.from_array(np.zeros((5, 3), np.float32), "w")
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul_bad")
    return _save(_model([node], [_value("x", [1, 4])], [_value("y", [1, 3])], [weight]),
                 folder / "matmul_mismatch.onnx")


def write_add_mismatch(folder: Path) -> Path:
    """Add of static shapes [2, 3] + [4, 5]: not broadcastable."""
    node = helper.make_node("Add", ["a", "b"], ["y"], name="add_bad")
    return _save(_model([node], [_value("a", [2, 3]), _value("b", [4, 5])], [_value("y", [2, 3])]),
                 folder / "add_mismatch.onnx")


def write_huge_raw_claim(folder: Path) -> Path:
    """An initializer claiming ``[1 << 29]`` floats (2 GiB) with 64 bytes of raw data."""
    model = valid_model()
    tensor = model.graph.initializer.add()
    tensor.name, tensor.data_type = "huge", TensorProto.FLOAT
    tensor.dims.append(1 << 29)
    tensor.raw_data = bytes(64)
    model.graph.input.append(_value("huge", [1 << 29]))
    return _save(model, folder / "huge_raw_claim.onnx")


def write_huge_external_claim(folder: Path) -> Path:
    """An initializer whose external data (a 1 KiB file beside it) claims a length of 2 GiB."""
    (folder / "weights.bin").write_bytes(bytes(1024))
    model = valid_model()
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in [("location", "weights.bin"), ("offset", "0"), ("length", str(2**31))]:
        weight.external_data.add(key=key, value=value)
    return _save(model, folder / "huge_external_claim.onnx")


def write_cycle(folder: Path) -> Path:
    """Two nodes that consume each other's output: ``a = x + b``, ``b = relu(a)``."""
    nodes = [helper.make_node("Add", ["x", "b_out"], ["a_out"], name="node_a"),
             helper.make_node("Relu", ["a_out"], ["b_out"], name="node_b")]
    return _save(_model(nodes, [_value("x", [1, 4])], [_value("a_out", [1, 4])]),
                 folder / "cycle.onnx")


class BadCase(NamedTuple):
    """A builder and a substring its error line must contain."""

    build: Callable[[Path], Path]
    expect: str


CORPUS: dict[str, BadCase] = {
    "empty": BadCase(write_empty, "the file is empty"),
    "random_bytes": BadCase(write_random_bytes, "is not a valid ONNX model"),
    "truncated": BadCase(write_truncated, "is not a valid ONNX model"),
    "truncated_at_field": BadCase(write_truncated_at_field, "fails the ONNX checker"),
    "unsupported_op": BadCase(write_unsupported_op, "op 'Celu' (node 'celu_0') is not supported"),
    "external_traversal": BadCase(write_external_traversal, "outside the model's folder"),
    "matmul_mismatch": BadCase(write_matmul_mismatch,
                               "shapes do not agree at node 'matmul_bad' (MatMul)"),
    "add_mismatch": BadCase(write_add_mismatch, "shapes do not agree at node 'add_bad' (Add)"),
    "huge_raw_claim": BadCase(write_huge_raw_claim, "tensor 'huge' claims 2147483648 bytes"),
    "huge_external_claim": BadCase(write_huge_external_claim,
                                   "claims 2147483648 bytes of external data"),
    "cycle": BadCase(write_cycle, "graph has a cycle through node 'node_a'"),
}


def write_corpus(folder: Path) -> dict[str, Path]:
    """Every case of ``CORPUS`` written into ``folder``: case name → file."""
    folder.mkdir(parents=True, exist_ok=True)
    return {name: case.build(folder) for name, case in CORPUS.items()}
