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
