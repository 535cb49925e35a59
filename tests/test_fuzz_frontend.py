"""Fuzz the frontend: a mutated model either loads or fails with one AutotuneError line.

Any other exception type (or a native crash of the process) is a bug in ``autotune.frontend``.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autotune.errors import AutotuneError
from autotune.frontend.importer import capture_native_stderr, load_model
from autotune.models import ModelConfig, write_example

from .conftest import TINY_SHAPES

#: A translation model small enough that most of its bytes are graph structure, not weights.
MICRO = ModelConfig(vocab=8, d_model=4, heads=2, ffn=8, encoder_layers=1, decoder_layers=1,
                    max_positions=16)

#: ``(kind, position, payload)``; bit flips and byte sets mostly keep the protobuf framing intact
#: (so the mutant reaches the checker, onnxsim and TVM), inserts, deletes and cuts mostly break it.
MUTATION = st.tuples(st.sampled_from(["bit"] * 3 + ["byte"] * 2 + ["insert", "delete", "cut"]),
                     st.floats(min_value=0, max_value=1, exclude_max=True),
                     st.binary(min_size=1, max_size=4))


def mutate(data: bytes, mutations: list[tuple[str, float, bytes]]) -> bytes:
    """``data`` with each ``(kind, where, payload)`` applied in turn; ``where`` in [0, 1) is the
    position as a fraction of the current length."""
    out = bytearray(data)
    for kind, where, payload in mutations:
        pos = int(where * len(out))
        if kind == "bit" and out:
            out[pos] ^= 1 << (payload[0] % 8)
        elif kind == "byte" and out:
            out[pos] = payload[0]
        elif kind == "insert":
            out[pos:pos] = payload
        elif kind == "delete":
            del out[pos:pos + len(payload)]
        elif kind == "cut":
            del out[pos:]
    return bytes(out)


@pytest.fixture(scope="module")
def micro_model(tmp_path_factory) -> tuple[Path, bytes]:
    """A folder to write mutants into, and the bytes of a valid micro translation model."""
    folder = tmp_path_factory.mktemp("fuzz")
    path = write_example("translation", folder / "micro.onnx", MICRO)
    return folder, path.read_bytes()


def _load(path: Path) -> None:
    """``load_model``; TVM's converter prints and library warnings are kept off the test log, and
    nothing may reach the process's stderr (a user would see it around the one error line)."""
    native: list[bytes] = []
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), \
                capture_native_stderr(native):
            warnings.simplefilter("ignore")
            load_model(path, TINY_SHAPES)
    finally:
        assert native == [b""], native[0][:2000]


def test_the_unmutated_model_loads(micro_model):
    folder, data = micro_model
    (folder / "mutant.onnx").write_bytes(data)
    _load(folder / "mutant.onnx")


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(mutations=st.lists(MUTATION, min_size=1, max_size=2))
def test_mutated_model_loads_or_fails_with_one_clear_line(micro_model, mutations):
    folder, data = micro_model
    path = folder / "mutant.onnx"
    path.write_bytes(mutate(data, mutations))
    try:
        _load(path)
    except AutotuneError as err:
        assert len(str(err).splitlines()) == 1, str(err)
        assert str(path) in str(err), str(err)


#: Values an edit writes: boundaries, negatives, and sizes that overflow 32 bits or claim GiBs.
VALUES = [0, 1, -1, 2, 3, 7, 99, 2**31, 2**40, -2**63, 1 << 29]
#: ``(kind, index, value)``: which part of the graph to edit, which element, what to write.
EDIT = st.tuples(st.sampled_from(["attr", "rewire", "op", "drop", "dims", "dtype", "input", "opset"]),
                 st.integers(min_value=0, max_value=10**6), st.sampled_from(VALUES))


def edit(model: onnx.ModelProto, edits: list[tuple[str, int, int]]) -> onnx.ModelProto:
    """A copy of ``model`` with each edit applied: the protobuf stays well-formed, so the mutant
    reaches the checker, shape inference, onnxsim and TVM."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    for kind, index, value in edits:
        node = graph.node[index % len(graph.node)]
        init = graph.initializer[index % len(graph.initializer)]
        names = [out for n in graph.node for out in n.output] + [i.name for i in graph.initializer]
        if kind == "attr" and node.attribute:
            _edit_attribute(node.attribute[index % len(node.attribute)], value)
        elif kind == "rewire" and node.input:
            node.input[index % len(node.input)] = names[value % len(names)]
        elif kind == "op":
            node.op_type = graph.node[value % len(graph.node)].op_type
        elif kind == "drop" and len(graph.node) > 1:
            graph.node.remove(node)
        elif kind == "dims":
            init.dims[:] = [*init.dims[:-1], value] if init.dims else [value]
        elif kind == "dtype":
            init.data_type = value % 32
        elif kind == "input":
            dims = graph.input[index % len(graph.input)].type.tensor_type.shape.dim
            dims[index % len(dims)].dim_value = value
        elif kind == "opset":
            out.opset_import[0].version = value % 40
    return out


def _edit_attribute(attribute: onnx.AttributeProto, value: int) -> None:
    if attribute.type == onnx.AttributeProto.INT:
        attribute.i = value
    elif attribute.type == onnx.AttributeProto.INTS and attribute.ints:
        attribute.ints[value % len(attribute.ints)] = value
    elif attribute.type == onnx.AttributeProto.FLOAT:
        attribute.f = float(value)
    elif attribute.type == onnx.AttributeProto.TENSOR:
        attribute.t.dims.append(value)


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(edits=st.lists(EDIT, min_size=1, max_size=2))
def test_edited_graph_loads_or_fails_with_one_clear_line(micro_model, edits):
    folder, data = micro_model
    path = folder / "edited.onnx"
    path.write_bytes(edit(onnx.load_from_string(data), edits).SerializeToString())
    try:
        _load(path)
    except AutotuneError as err:
        assert len(str(err).splitlines()) == 1, str(err)
        assert str(path) in str(err), str(err)
