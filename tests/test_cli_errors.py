"""Bad input gets one clear line naming the problem and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from autotune.cli import main

from .conftest import TINY_SHAPE_FLAGS, run_env


def _error_line(capsys, argv: list[str], code: int = 2) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("autotune: error: "), err
    return err[0]


def _unsupported_op_model(path):
    node = helper.make_node("Celu", ["x"], ["y"], name="celu_0")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def test_missing_file(capsys, tmp_path):
    line = _error_line(capsys, ["tasks", str(tmp_path / "nope.onnx")])
    assert "model file not found" in line and "nope.onnx" in line


def test_not_onnx(capsys, tmp_path):
    path = tmp_path / "random.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    assert "is not a valid ONNX model" in _error_line(capsys, ["tasks", str(path)])


def test_truncated_onnx(capsys, tmp_path, tiny_translation):
    path = tmp_path / "truncated.onnx"
    path.write_bytes(tiny_translation.read_bytes()[:5000])
    line = _error_line(capsys, ["tasks", str(path), *TINY_SHAPE_FLAGS])
    assert "truncated.onnx" in line and ("not a valid ONNX" in line or "checker" in line)


def test_unsupported_op_is_named(capsys, tmp_path):
    path = tmp_path / "celu.onnx"
    _unsupported_op_model(path)
    line = _error_line(capsys, ["tasks", str(path)])
    assert "'Celu'" in line and "celu_0" in line and "not supported" in line


def test_dynamic_dim_without_shape_names_the_input(capsys, tiny_translation):
    line = _error_line(capsys, ["tasks", str(tiny_translation), "--shape", "input_ids=1x16"])
    assert "'decoder_input_ids'" in line and "--shape decoder_input_ids=NxN" in line


def test_shape_for_unknown_input(capsys, tiny_translation):
    line = _error_line(capsys, ["tasks", str(tiny_translation), *TINY_SHAPE_FLAGS,
                                "--shape", "attention_mask=1x16"])
    assert "'attention_mask'" in line and "inputs: input_ids, decoder_input_ids" in line


def test_bad_shape_syntax(capsys, tiny_translation):
    line = _error_line(capsys, ["tasks", str(tiny_translation), "--shape", "input_ids=1xa"])
    assert "bad --shape 'input_ids=1xa'" in line


def test_unknown_target(capsys, tiny_translation):
    line = _error_line(capsys, ["tasks", str(tiny_translation), *TINY_SHAPE_FLAGS,
                                "--target", "llvm -mcpu=skylake"])
    assert "unknown target --target 'llvm -mcpu=skylake'" in line


@pytest.mark.parametrize("url, code", [("postgresql://nobody@127.0.0.1:1/none", 4),
                                       ("sqlite:////proc/nope/x.db", 4), ("notadb://x", 2)])
def test_unreachable_db(capsys, tiny_translation, url, code):
    """A database that cannot be reached is the environment's fault (exit 4), a bad URL the user's (2)."""
    line = _error_line(capsys, ["tune", str(tiny_translation), *TINY_SHAPE_FLAGS, "--trials", "2",
                                "--db", url], code)
    assert f"cannot open database --db {url}" in line


def test_tune_needs_a_budget(capsys, tiny_translation):
    assert "give a budget" in _error_line(capsys, ["tune", str(tiny_translation), *TINY_SHAPE_FLAGS])


def test_real_process_prints_no_traceback(tmp_path):
    """The console entry point, as a user runs it."""
    proc = subprocess.run([sys.executable, "-m", "autotune.cli", "tasks", str(tmp_path / "x.onnx")],
                          capture_output=True, text=True, env=run_env(), timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"autotune: error: model file not found: {tmp_path / 'x.onnx'}"


def test_unknown_bench_peer_is_named(capsys, tmp_path):
    line = _error_line(capsys, ["bench", str(tmp_path / "m.so"), "--peers", "onnxruntime,tensorrt"])
    assert "unknown peer tensorrt" in line and "openvino" in line
