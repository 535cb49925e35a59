"""Graph-level passes before task extraction."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import autotune
from autotune.jobs.prepare import prepare


def _save(path, name: str, nodes: list, inputs: dict, outputs: dict, initializers=()) -> str:
    """Write an opset-17 ONNX graph of float tensors (``{name: shape}``) to ``path``."""
    def values(tensors: dict) -> list:
        return [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in tensors.items()]

    graph = helper.make_graph(nodes, name, values(inputs), values(outputs), list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())
    return str(path)


def _powers_model(path) -> str:
    """``x**3 + x**2 + x**2.5`` over a ``16 x 32`` input (2.5 must stay a power)."""
    consts = [numpy_helper.from_array(np.array(v, np.float32), n)
              for n, v in (("three", 3.0), ("two", 2.0), ("two_and_half", 2.5))]
    nodes = [helper.make_node("Abs", ["x"], ["ax"]),
             helper.make_node("Pow", ["ax", "three"], ["cube"]),
             helper.make_node("Pow", ["ax", "two"], ["square"]),
             helper.make_node("Pow", ["ax", "two_and_half"], ["other"]),
             helper.make_node("Sum", ["cube", "square", "other"], ["y"])]
    return _save(path, "powers", nodes, {"x": [16, 32]}, {"y": [16, 32]}, consts)


def test_small_powers_become_products_and_still_match_onnxruntime(tmp_path):
    model = _powers_model(tmp_path / "powers.onnx")
    prepared = prepare(model, None, "host")
    kernels = "\n".join(t.mod.script() for t in prepared.tasks)
    assert kernels.count("T.pow(") == 1  # only x ** 2.5 is left a power
    built = autotune.compile(model, tmp_path / "powers.so", db=f"sqlite:///{tmp_path / 'empty.db'}")
    assert built["validation"]["passed"]


def _divisions_model(path, divisor: float) -> str:
    """``x / sqrt(2) + x / v`` over a ``16 x 32`` input, ``v`` a constant row ending in ``divisor``."""
    row = np.linspace(0.5, 3.0, 32).astype(np.float32)
    row[-1] = divisor
    consts = [numpy_helper.from_array(np.array(np.sqrt(2), np.float32), "root_two"),
              numpy_helper.from_array(row, "row")]
    nodes = [helper.make_node("Div", ["x", "root_two"], ["scaled"]),
             helper.make_node("Div", ["x", "row"], ["per_column"]),
             helper.make_node("Add", ["scaled", "per_column"], ["y"])]
    return _save(path, "divisions", nodes, {"x": [16, 32]}, {"y": [16, 32]}, consts)


def test_divisions_by_constants_become_products_and_still_match_onnxruntime(tmp_path):
    """A vector division costs several multiplications: ``x / c`` becomes ``x * (1 / c)``, except where
    ``c`` holds a zero (infinities and NaNs stay those of a division)."""
    model = _divisions_model(tmp_path / "divisions.onnx", 2.0)
    kernels = "\n".join(t.mod.script() for t in prepare(model, None, "host").tasks)
    assert "T_divide" not in kernels and "T_multiply" in kernels
    built = autotune.compile(model, tmp_path / "divisions.so", db=f"sqlite:///{tmp_path / 'empty.db'}")
    assert built["validation"]["passed"]
    with_zero = _divisions_model(tmp_path / "with_zero.onnx", 0.0)
    assert "T_divide" in "\n".join(t.mod.script() for t in prepare(with_zero, None, "host").tasks)


def _nan_guard_model(path) -> str:
    """``where(isnan(x / d), -1, x / d)``: the exporters' softmax guard, on 64 values."""
    minus_one = numpy_helper.from_array(np.array(-1.0, np.float32), "minus_one")
    nodes = [helper.make_node("Div", ["x", "d"], ["q"]), helper.make_node("IsNaN", ["q"], ["nan"]),
             helper.make_node("Where", ["nan", "minus_one", "q"], ["y"])]
    return _save(path, "nan_guard", nodes, {"x": [64], "d": [64]}, {"y": [64]}, [minus_one])


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


def _one_layer_task(tasks, kind: str):
    """The one task whose name holds ``kind``, checked to run once per encoder layer."""
    from autotune.models import TINY

    found = [t for t in tasks if kind in t.name]
    assert len(found) == 1 and found[0].weight == TINY.encoder_layers, [t.name for t in tasks]
    return found[0]


def _matmul_blocks(task) -> int:
    return sum(b.startswith('"matmul') for b in task.mod.script().split("T.sblock(")[1:])


def test_each_attention_block_becomes_one_task(tiny_encoder):
    """Scores, mask, softmax, × V and the Q/V head transposes: one task, not five to seven."""
    tasks = prepare(tiny_encoder, {"input_ids": (1, 16)}, "host").tasks
    attention = _one_layer_task(tasks, "attention")
    assert not any("softmax" in t.name for t in tasks)
    assert _matmul_blocks(attention) == 2
    assert '"T_transpose' in attention.mod.script()  # the head layout is read in place
    unfused = prepare(tiny_encoder, {"input_ids": (1, 16)}, "host", fusion="none")
    assert not any("attention" in t.name for t in unfused.tasks)


def test_the_key_projection_writes_k_transposed_per_head(tiny_encoder):
    """K's head transpose joins the matmul computing K: no transpose is left a task of its own."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    from autotune.models import TINY

    tasks = prepare(tiny_encoder, {"input_ids": (1, 16)}, "host").tasks
    key = _one_layer_task(tasks, "key_projection")
    assert not any("transpose" in t.name for t in tasks)
    assert _matmul_blocks(key) == 1
    written = ArgInfo.from_prim_func(key.mod["main"])[-1]
    head_dim = TINY.d_model // TINY.heads
    assert [int(d) for d in written.shape] == [1, TINY.heads, head_dim, 16]  # batch, head, dim, key


def _twice_the_same_softmax_model(path) -> str:
    """``softmax(x) @ softmax(x)``, the softmax written twice, as exporters repeat a mask per layer."""
    nodes = [helper.make_node("Softmax", ["x"], ["a"], axis=-1),
             helper.make_node("Softmax", ["x"], ["b"], axis=-1),
             helper.make_node("MatMul", ["a", "b"], ["y"])]
    return _save(path, "twice", nodes, {"x": [8, 8]}, {"y": [8, 8]})


def test_a_repeated_subexpression_is_computed_once(tmp_path):
    model = _twice_the_same_softmax_model(tmp_path / "twice.onnx")
    prepared = prepare(model, None, "host")
    softmax = [t for t in prepared.tasks if "softmax" in t.name]
    assert [t.weight for t in softmax] == [1], [(t.name, t.weight) for t in prepared.tasks]
    built = autotune.compile(model, tmp_path / "twice.so", db=f"sqlite:///{tmp_path / 'empty.db'}")
    assert built["validation"]["passed"]


def _folded_broadcast_model(path) -> str:
    """``(x + rows) + x * noise`` over ``4 x 32 x 64``: ``rows`` one row repeated (a folded broadcast,
    as the token-type embeddings of all-zero ids become in an export), ``noise`` all different."""
    rng = np.random.default_rng(0)
    row = rng.standard_normal(64).astype(np.float32)
    rows = numpy_helper.from_array(np.broadcast_to(row, (4, 32, 64)).copy(), "rows")
    noise = numpy_helper.from_array(rng.standard_normal((4, 32, 64)).astype(np.float32), "noise")
    nodes = [helper.make_node("Add", ["x", "rows"], ["shifted"]), helper.make_node("Mul", ["x", "noise"], ["scaled"]),
             helper.make_node("Add", ["shifted", "scaled"], ["y"])]
    return _save(path, "folded_broadcast", nodes, {"x": [4, 32, 64]}, {"y": [4, 32, 64]}, [rows, noise])


def _constant_shapes(mod) -> list[tuple[int, ...]]:
    import tvm
    from tvm import relax

    found = []
    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, lambda e: isinstance(e, tvm.ir.expr.GenericConst)
                                            and found.append(tuple(e.value.shape)))
    return found


def test_a_constant_that_repeats_one_row_is_stored_as_that_row(tmp_path):
    """The artifact and every call carry the row once; a constant of distinct values stays whole."""
    model = _folded_broadcast_model(tmp_path / "folded.onnx")
    assert sorted(_constant_shapes(prepare(model, None, "host").fused)) == [(1, 1, 64), (4, 32, 64)]
    built = autotune.compile(model, tmp_path / "folded.so", db=f"sqlite:///{tmp_path / 'empty.db'}")
    assert built["validation"]["passed"]


def test_tuple_items_are_read_from_the_tuple_they_were_built_from():
    """Packed weights come back from ``FoldConstant`` as a tuple of constants read item by item;
    forwarded, the tuple is dead and the VM no longer builds and unpacks it on every inference."""
    import tvm
    from tvm import relax
    from tvm.script import relax as R

    from autotune.backends.packing import tuple_items_forwarded

    @tvm.script.ir_module
    class Packed:
        @R.function
        def main(x: R.Tensor((2,), "float32")) -> R.Tensor((2,), "float32"):
            with R.dataflow():
                weights = (R.const(np.ones(2, np.float32)), R.const(np.full(2, 3, np.float32)))
                scale = weights[1]
                y = R.multiply(x, scale)
                R.output(y)
            return y

    cleaned = relax.transform.DeadCodeElimination()(tuple_items_forwarded()(Packed))
    script = cleaned["main"].script()
    assert "weights" not in script and "[1]" not in script
    built = relax.VirtualMachine(tvm.compile(cleaned, target="llvm"), tvm.cpu())
    np.testing.assert_array_equal(built["main"](tvm.runtime.tensor(np.arange(2, dtype=np.float32))).numpy(),
                                  [0.0, 3.0])
