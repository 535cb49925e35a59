"""Reduced precision on CPU (emulated on AVX2): compiles, checked against fp32 ONNX Runtime."""

from __future__ import annotations

import json

import pytest

import autotune
from autotune.cli import main

SHAPES = {"input_ids": (1, 16)}


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_compiles_and_passes_a_loose_check(tiny_encoder, tmp_path, precision):
    so_path = tmp_path / f"encoder_{precision}.so"
    summary = autotune.compile(tiny_encoder, so_path, SHAPES, "host", f"sqlite:///{tmp_path / 'e.db'}",
                               precision=precision, max_rel_err=0.2, min_cosine=0.98)
    valid = summary["validation"]
    assert valid["passed"] and 0.98 <= valid["min_cosine"] <= 1.0
    assert valid["max_rel_err"] > 1e-4  # fp32 builds match to ~1e-7: the precision took effect
    manifest = json.loads((tmp_path / f"encoder_{precision}.so.json").read_text())
    assert manifest["precision"] == precision and manifest["validation"]["min_cosine"] == valid["min_cosine"]


def test_too_strict_tolerance_is_refused_with_exit_3(tiny_encoder, tmp_path, capsys):
    code = main(["compile", str(tiny_encoder), "--shape", "input_ids=1x16", "--precision", "bf16",
                 "--db", f"sqlite:///{tmp_path / 'e.db'}", "-o", str(tmp_path / "strict.so"),
                 "--max-rel-err", "1e-9", "--min-cosine", "0.9999999999"])
    assert code == 3
    err = capsys.readouterr().err
    assert "(bf16) does not match ONNX Runtime fp32" in err and "min cosine" in err
