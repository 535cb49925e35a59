"""Reduced precision on CPU: bf16 with native dot products (AVX512-BF16), fp16 as TVM lowers it;
every build checked against fp32 ONNX Runtime."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import autotune
from autotune.cli import main
from autotune.deploy import text_accuracy
from autotune.models import ModelConfig, write_example
from autotune.schedules import bf16
from autotune.targets.host import lacking_on_host

from .conftest import run_env

SHAPES = {"input_ids": (1, 16)}
needs_bf16 = pytest.mark.skipif(bool(lacking_on_host([bf16.FEATURE])),
                                reason="this CPU lacks AVX512-BF16 (vdpbf16ps)")


def _instructions(so_path, mnemonic: str) -> int:
    disassembly = subprocess.run(["objdump", "-d", str(so_path)], capture_output=True, text=True, check=True)
    return disassembly.stdout.count(mnemonic)


@needs_bf16
def test_bf16_computes_projections_with_vdpbf16ps_and_stores_half_the_weight_bytes(tmp_path):
    # weights (2 MB in fp32) well above the code's size, so the artifact's size shows their bytes
    model = write_example("encoder", tmp_path / "encoder.onnx", ModelConfig(
        vocab=2000, d_model=128, heads=4, ffn=512, encoder_layers=1, decoder_layers=0, max_positions=64))
    db = f"sqlite:///{tmp_path / 'e.db'}"
    fp32 = autotune.compile(model, tmp_path / "fp32.so", SHAPES, "host", db)
    summary = autotune.compile(model, tmp_path / "bf16.so", SHAPES, "host", db, precision="bf16")
    valid = summary["validation"]
    assert valid["passed"] and valid["min_cosine"] >= 0.999
    assert valid["max_rel_err"] > 1e-4  # fp32 builds match to ~1e-7: the precision took effect
    manifest = json.loads((tmp_path / "bf16.so.json").read_text())
    assert manifest["precision"] == "bf16" and manifest["validation"]["min_cosine"] == valid["min_cosine"]
    assert "avx512bf16" in manifest["required_features"]
    if shutil.which("objdump"):
        assert _instructions(tmp_path / "bf16.so", "vdpbf16ps") > 0
        assert _instructions(tmp_path / "fp32.so", "vdpbf16ps") == 0
    assert (tmp_path / "bf16.so").stat().st_size < 0.65 * (tmp_path / "fp32.so").stat().st_size
    assert fp32["validation"]["max_rel_err"] < 1e-4


@needs_bf16
def test_bf16_search_tensorizes_the_dot_products(tiny_encoder, tmp_path):
    """The search's candidates of bf16 tasks build (no vectorised loop around the intrinsic) and
    some use the instruction."""
    import sqlalchemy

    db = f"sqlite:///{tmp_path / 'e.db'}"
    summary = autotune.tune(tiny_encoder, SHAPES, "host", db, trials=40, precision="bf16", confirm=False)
    assert summary["trials_measured"] > 0
    with sqlalchemy.create_engine(db).connect() as connection:
        rows = connection.execute(sqlalchemy.text(
            "select r.record_json, r.latency_s, r.error_msg from tuning_records r join job_tasks t "
            "on t.workload_id = r.workload_id where r.provenance = 'search' "
            "and t.task_name like '%bf16_matmul%'")).all()
    assert rows, "no bf16 task was searched"
    assert not [r.error_msg for r in rows if r.error_msg], "bf16 candidates failed to build"
    assert any(bf16.INTRINSIC in r.record_json for r in rows), "no candidate tensorized"
    # a fresh process (no schedule rule has run in it) replays the tensorized records
    built = subprocess.run([sys.executable, "-m", "autotune.cli", "compile", str(tiny_encoder), "--shape",
                            "input_ids=1x16", "--precision", "bf16", "--db", db, "-o", str(tmp_path / "tuned.so"),
                            "--json"], capture_output=True, text=True, env=run_env(), timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    assert json.loads(built.stdout)["validation"]["passed"]


def test_bf16_bits_round_to_nearest_even():
    values = np.array([1.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, -2.5, np.inf, np.nan], np.float32)
    assert bf16.bf16_values(bf16.bf16_bits(values))[:5].tolist() == [1.0, 1.0, 1.0 + 2 ** -6, -2.5, np.inf]
    assert np.isnan(bf16.bf16_values(bf16.bf16_bits(values))[5])
    weight = np.arange(8 * 32, dtype=np.float32).reshape(8, 32)
    packed = bf16.packed_weight(weight)
    assert packed.shape == (4, 32, 2) and bf16.bf16_values(packed[1, 3]).tolist() == [2 * 32 + 3, 3 * 32 + 3]


def test_bf16_is_refused_for_a_target_without_avx512_bf16(tiny_encoder, tmp_path, capsys):
    code = main(["compile", str(tiny_encoder), "--shape", "input_ids=1x16", "--precision", "bf16",
                 "--target", "avx2", "--db", f"sqlite:///{tmp_path / 'e.db'}", "-o", str(tmp_path / "x.so")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "AVX512-BF16" in err[0] and "haswell" in err[0]
    assert not (tmp_path / "x.so").exists()


def test_fp16_compiles_and_passes_a_loose_check(tiny_encoder, tmp_path):
    summary = autotune.compile(tiny_encoder, tmp_path / "encoder_fp16.so", SHAPES, "host",
                               f"sqlite:///{tmp_path / 'e.db'}", precision="fp16", max_rel_err=0.2,
                               min_cosine=0.98)
    valid = summary["validation"]
    assert valid["passed"] and 0.98 <= valid["min_cosine"] <= 1.0 and valid["max_rel_err"] > 1e-4


@needs_bf16
def test_too_strict_tolerance_is_refused_with_exit_3(tiny_encoder, tmp_path, capsys):
    code = main(["compile", str(tiny_encoder), "--shape", "input_ids=1x16", "--precision", "bf16",
                 "--db", f"sqlite:///{tmp_path / 'e.db'}", "-o", str(tmp_path / "strict.so"),
                 "--max-rel-err", "1e-9", "--min-cosine", "0.9999999999"])
    assert code == 3
    err = capsys.readouterr().err
    assert "(bf16) does not match ONNX Runtime fp32" in err and "min cosine" in err
    assert not (tmp_path / "strict.so").exists()


def test_real_sentences_ship_tokenized_and_compare_embeddings():
    vocab, sentences = text_accuracy.tokenized_sentences()
    assert vocab == 30522 and len(sentences) >= 30
    assert all(ids[0] == 101 and ids[-1] == 102 for ids in sentences)  # [CLS] ... [SEP]
    rng = np.random.default_rng(0)
    reference = [rng.standard_normal((len(ids), 8)) for ids in sentences]
    same = text_accuracy.compare_embeddings(reference, reference)
    assert same.sentence_cosine_min == pytest.approx(1.0) and same.similarity_spearman == pytest.approx(1.0)
    noisy = text_accuracy.compare_embeddings([r + 0.3 * rng.standard_normal(r.shape) for r in reference],
                                             reference)
    assert noisy.token_cosine_min < noisy.token_cosine_mean < 0.99 and noisy.similarity_spearman < 0.99


@needs_bf16
def test_bf16_is_judged_on_real_sentences_and_refused_past_the_users_limit(tmp_path, capsys):
    """A BERT-style model with the sentences' vocabulary: compile reports real-text accuracy, and
    a sentence-cosine limit it cannot reach stops the deployment (exit 3, nothing written)."""
    model = write_example("bert", tmp_path / "bert.onnx", ModelConfig(
        vocab=30522, d_model=64, heads=2, ffn=128, encoder_layers=1, decoder_layers=0, max_positions=64))
    db = f"sqlite:///{tmp_path / 'e.db'}"
    shapes = {"input_ids": (1, 32), "attention_mask": (1, 32), "token_type_ids": (1, 32)}
    summary = autotune.compile(model, tmp_path / "bert.so", shapes, "host", db, precision="bf16")
    text = summary["validation"]["text_accuracy"]
    assert text["sentences"] >= 30 and 0.999 <= text["sentence_cosine_min"] < 1.0
    assert text["token_cosine_min"] <= text["token_cosine_mean"] and summary["validation"]["passed"]
    flags = [f"--shape={n}=1x32" for n in shapes]
    code = main(["compile", str(model), *flags, "--precision", "bf16", "--db", db,
                 "-o", str(tmp_path / "strict.so"), "--min-sentence-cosine", "0.99999999"])
    assert code == 3 and "real sentences" in capsys.readouterr().err
    assert not (tmp_path / "strict.so").exists()


def test_dot_product_peaks_are_measured_where_the_cpu_has_the_instruction():
    from autotune.bench.peaks import dot_product_peak
    from autotune.targets.host import host_cpu_flags

    for precision, flag in (("bf16", "avx512_bf16"), ("int8", "avx512_vnni")):
        peak = dot_product_peak(precision, 1)
        assert (peak is None) == (flag not in host_cpu_flags()) and (peak is None or peak > 0)


@needs_bf16
@pytest.mark.parametrize("shape", [(1, 16), (3, 16)])
def test_every_bf16_task_gets_its_vdpbf16ps_schedule_at_any_batch(tiny_encoder, shape):
    """A task the rule cannot tile would run its naive loops (a hundred times slower)."""
    from autotune.jobs.prepare import prepare
    from autotune.schedules.heuristics import heuristic_schedules

    prepared = prepare(tiny_encoder, {"input_ids": shape}, "host", "full", "bf16")
    dot_tasks = [t for t in prepared.tasks if bf16.has_dot_block(t.mod)]
    assert dot_tasks
    for task in dot_tasks:
        schedules = heuristic_schedules(task.mod, prepared.target)
        assert schedules and all(bf16.INTRINSIC in str(s.trace) for s in schedules), task.name
