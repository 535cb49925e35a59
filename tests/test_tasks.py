"""Graph-level passes before task extraction."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import autotune
from autotune.jobs import prepare


def _powers_model(path) -> str:
    """``x**3 + x**2 + x**2.5`` over a ``16 x 32`` input (2.5 must stay a power)."""
    consts = [numpy_helper.from_array(np.array(v, np.float32), n)
              for n, v in (("three", 3.0), ("two", 2.0), ("two_and_half", 2.5))]
    nodes = [helper.make_node("Abs", ["x"], ["ax"]),
             helper.make_node("Pow", ["ax", "three"], ["cube"]),
             helper.make_node("Pow", ["ax", "two"], ["square"]),
             helper.make_node("Pow", ["ax", "two_and_half"], ["other"]),
             helper.make_node("Sum", ["cube", "square", "other"], ["y"])]
    graph = helper.make_graph(nodes, "powers",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16, 32])], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())
    return str(path)


def test_small_powers_become_products_and_still_match_onnxruntime(tmp_path):
    model = _powers_model(tmp_path / "powers.onnx")
    prepared = prepare(model, None, "host")
    kernels = "\n".join(t.mod.script() for t in prepared.tasks)
    assert kernels.count("T.pow(") == 1  # only x ** 2.5 is left a power
    built = autotune.compile(model, tmp_path / "powers.so", db=f"sqlite:///{tmp_path / 'empty.db'}")
    assert built["validation"]["passed"]


def _nan_guard_model(path) -> str:
    """``where(isnan(x / d), -1, x / d)``: the exporters' softmax guard, on 64 values."""
    minus_one = numpy_helper.from_array(np.array(-1.0, np.float32), "minus_one")
    nodes = [helper.make_node("Div", ["x", "d"], ["q"]), helper.make_node("IsNaN", ["q"], ["nan"]),
             helper.make_node("Where", ["nan", "minus_one", "q"], ["y"])]
    graph = helper.make_graph(nodes, "nan_guard",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [64]) for n in "xd"],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64])], [minus_one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())
    return str(path)


def test_isnan_is_a_bit_test_that_still_finds_every_nan(tmp_path):
    """No scalar ``isnan`` left (it blocks vectorising); NaN, ±inf and numbers all still told apart."""
    model = _nan_guard_model(tmp_path / "nan_guard.onnx")
    assert not any("T.isnan(" in t.mod.script() for t in prepare(model, None, "host").tasks)
    autotune.compile(model, tmp_path / "nan_guard.so", db=f"sqlite:///{tmp_path / 'empty.db'}")
    x = np.tile(np.array([0, 1, -1, 2.5, 0, 3e38, -0.0, 7], np.float32), 8)
    d = np.tile(np.array([0, 0, 0, 2, 1, 1e-10, 0, np.nan], np.float32), 8)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        q = x / d
    y = autotune.load(tmp_path / "nan_guard.so")(x=x, d=d)["y"]
    np.testing.assert_array_equal(y, np.where(np.isnan(q), np.float32(-1), q))


def test_each_attention_block_becomes_one_task(tiny_encoder):
    """Scores, mask, softmax, × V and the Q/V head transposes: one task, not five to seven."""
    from autotune.jobs import prepare
    from autotune.models import TINY

    prepared = prepare(tiny_encoder, {"input_ids": (1, 16)}, "host")
    names = [t.name for t in prepared.tasks]
    attention = [t for t in prepared.tasks if "attention" in t.name]
    assert len(attention) == 1 and attention[0].weight == TINY.encoder_layers, names
    assert not any("softmax" in n for n in names), names
    blocks = [str(b) for b in attention[0].mod.script().split("T.sblock(")[1:]]
    assert sum(b.startswith('"matmul') for b in blocks) == 2
    assert any(b.startswith('"T_transpose') for b in blocks)  # the head layout is read in place
    unfused = prepare(tiny_encoder, {"input_ids": (1, 16)}, "host", fusion="none")
    assert not any("attention" in t.name for t in unfused.tasks)
