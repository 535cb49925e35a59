"""Range artifacts: one ``.so`` serving every shape in the ranges it was compiled for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import autotune
from autotune.errors import AutotuneError
from autotune.frontend.buckets import DimRange, ladder, parse_dims
from autotune.frontend.importer import load_model, parse_shape
from autotune.models import TINY, write_example

from .conftest import run_env

BERT_RANGE = {"input_ids": "1..2x1..20", "attention_mask": "1..2x1..20", "token_type_ids": "1..2x1..20"}
ODD_SHAPES = [(1, 1), (1, 7), (2, 9), (2, 20), (1, 13)]

CHECK = r"""
import json, sys
import numpy as np
import onnxruntime as ort
import autotune
from autotune.frontend.inputs import padded_mask

so, onnx_path, shapes = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
model = autotune.load(so)
session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
rng = np.random.default_rng(0)
worst = 0.0
for batch, seq in shapes:
    feeds = {}
    for spec in model.inputs:
        shape = (batch, seq)
        if "mask" in spec["name"]:
            feeds[spec["name"]] = padded_mask(shape, spec["dtype"])
        else:
            high = spec["index_range"][1] if "index_range" in spec else 1
            feeds[spec["name"]] = rng.integers(0, high + 1, shape).astype(spec["dtype"])
    ours, = model(feeds).values()
    ref, = session.run(None, feeds)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    worst = max(worst, float(np.abs(ours - ref).max() / np.abs(ref).max()))
errors = []
for bad in [(3, 4), (1, 21)]:
    try:
        model({s["name"]: np.ones(bad, dtype=s["dtype"]) for s in model.inputs})
    except autotune.AutotuneError as err:
        errors.append(str(err))
print(json.dumps({"worst_rel": worst, "errors": errors, "inputs": model.inputs}))
"""


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return write_example("bert", tmp_path_factory.mktemp("ranges") / "bert.onnx", TINY)


@pytest.fixture(scope="module")
def bert_range_artifact(tiny_bert, tmp_path_factory):
    folder = tmp_path_factory.mktemp("range_artifact")
    built = autotune.compile(tiny_bert, folder / "bert.so", BERT_RANGE, db=f"sqlite:///{folder / 'db.sqlite'}")
    return folder / "bert.so", built


def test_shape_ranges_parse_and_name_what_is_wrong():
    assert parse_shape("input_ids=1..8x1..128") == ("input_ids", (DimRange(1, 8), DimRange(1, 128)))
    assert parse_shape("input_ids=1x128")[1] == (DimRange(1, 1), DimRange(128, 128))
    for text, said in [("1..0x4", "empty range '1..0'"), ("ax4", "dim 0 is 'a'"), ("0x4", "dims start at 1"),
                       ("1..x4", "dim 0 is '1..'")]:
        with pytest.raises(AutotuneError, match=said.replace(".", r"\.")):
            parse_dims(text, f"--shape input_ids={text}")
    with pytest.raises(AutotuneError, match="expected NAME=DIMxDIM"):
        parse_shape("input_ids")


def test_a_dims_own_rungs_replace_the_ladder_where_padding_is_safe_and_survive_the_api():
    from autotune.frontend.buckets import as_dims, powers_of_two

    assert ladder(powers_of_two(DimRange(1, 64)), pad_safe=True, leading=False) == [4, 8, 16, 32, 64]
    assert ladder(powers_of_two(DimRange(9, 50)), pad_safe=True, leading=False) == [16, 32, 52]
    assert ladder(powers_of_two(DimRange(3, 6)), pad_safe=False, leading=False) == [3, 4, 5, 6]  # exact dims stay exact
    (kept,) = as_dims((powers_of_two(DimRange(1, 64)),), "--shape source")
    assert kept.rungs == (4, 8, 16, 32, 64)


def test_ladders_pad_little_and_exact_dims_take_every_value():
    rungs = ladder(DimRange(1, 128), pad_safe=True)
    assert rungs[0] == 1 and rungs[-1] == 128
    assert all(b / a <= 1.25 for a, b in zip(rungs, rungs[1:]) if a >= 16)
    for unit in (2, 4):  # a sequence: multiples of the rung unit, at most 1/8 apart from 8 units up
        rungs = ladder(DimRange(1, 128), pad_safe=True, leading=False, unit=unit)
        assert rungs[0] == 4 and rungs[-1] == 128 and all(r % unit == 0 for r in rungs)
        assert all(b / a <= 1.125 for a, b in zip(rungs, rungs[1:]) if a >= 8 * unit)
    assert ladder(DimRange(9, 50), pad_safe=True, leading=False, unit=4)[::4] == [12, 28, 44]
    assert ladder(DimRange(4, 6), pad_safe=False) == [4, 5, 6]


def test_on_avx512_a_sequence_rung_may_be_any_even_number_and_avx2_keeps_multiples_of_its_tile():
    from autotune.schedules.matmul import sequence_rung_unit
    from autotune.targets.names import parse_target

    assert sequence_rung_unit(parse_target("avx2")) == 4
    assert sequence_rung_unit(parse_target("avx512")) == 2
    assert sequence_rung_unit(parse_target("cuda-sm90")) == 4


def test_a_range_that_contradicts_the_model_is_one_clear_line(tiny_bert, tmp_path):
    with pytest.raises(AutotuneError, match=r"attention_mask: dim 1 \(seq\) is 1\.\.16, but --shape input_ids gives 1\.\.20"):
        load_model(tiny_bert, {"input_ids": "1..2x1..20", "attention_mask": "1..2x1..16"})
    with pytest.raises(AutotuneError, match="has rank 2"):
        load_model(tiny_bert, {"input_ids": "1..2x1..20x3"})
    fixed = onnx.load(str(tiny_bert))
    for value in fixed.graph.input:
        value.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(fixed, str(tmp_path / "fixed_batch.onnx"))
    with pytest.raises(AutotuneError, match="dim 0 of input 'input_ids' is fixed at 1 .* cannot be 1..4"):
        load_model(tmp_path / "fixed_batch.onnx", {"input_ids": "1..4x1..20"})


def test_a_dim_padding_would_change_gets_exact_buckets_or_a_refusal(tiny_translation):
    """The translation model's source has no attention mask: padding it changes the encoder's
    outputs, so its range gets a bucket per value, and a wide range is refused naming it."""
    model = load_model(tiny_translation, {"input_ids": "1x4..6", "decoder_input_ids": "1x1..8"}, for_tuning=True)
    assert model.plan.ladders == {"input_ids_seq": [4, 5, 6], "decoder_input_ids_seq": [4, 8]}
    with pytest.raises(AutotuneError, match=r"input 'input_ids' dim 1 \(input_ids_seq\): padding it changes"):
        load_model(tiny_translation, {"input_ids": "1x1..64", "decoder_input_ids": "1x1..8"})


def test_one_artifact_serves_every_shape_in_its_range(bert_range_artifact, tiny_bert):
    """Compiled once, called at odd shapes in a fresh process through autotune.load, with real
    padding in the attention mask: ONNX Runtime's outputs on the unpadded inputs; outside the
    range, one error naming the input, dim, value and range."""
    so_path, built = bert_range_artifact
    assert built.validation["passed"]
    proc = subprocess.run([sys.executable, "-c", CHECK, str(so_path), str(tiny_bert), json.dumps(ODD_SHAPES)],
                          capture_output=True, text=True, env=run_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["worst_rel"] < 1e-4
    assert result["errors"] == [
        "input 'input_ids' dim 0 (batch): got 3, outside the range 1..2 the artifact was compiled for",
        "input 'input_ids' dim 1 (seq): got 21, outside the range 1..20 the artifact was compiled for"]
    assert result["inputs"][0]["range"] == [[1, 2], [1, 20]]


def test_a_range_artifact_stores_its_weights_once(bert_range_artifact, tiny_bert, tmp_path):
    """More buckets add code, not copies of the weights: a wider vocabulary grows the range
    artifact by what it grows a single-shape one."""
    wide = write_example("bert", tmp_path / "wide.onnx", TINY.__class__(**{**TINY.__dict__, "vocab": 20000}))
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    sizes = {}
    for name, model in [("small", tiny_bert), ("wide", wide)]:
        for kind, shapes in [("range", BERT_RANGE), ("one", {k: "1x20" for k in BERT_RANGE})]:
            so = tmp_path / f"{name}_{kind}.so"
            autotune.compile(model, so, shapes, db=db, validate=False)
            sizes[name, kind] = so.stat().st_size
    weights_growth = sizes["wide", "one"] - sizes["small", "one"]
    assert weights_growth > 0
    assert abs((sizes["wide", "range"] - sizes["small", "range"]) - weights_growth) < 0.05 * weights_growth


def test_bad_calls_of_a_range_artifact_are_one_error_each(bert_range_artifact):
    model = autotune.load(bert_range_artifact[0])
    good = {s["name"]: np.ones((1, 5), dtype=s["dtype"]) for s in model.inputs}
    cases = [({**good, "input_ids": np.ones((1, 5, 1), dtype=np.int64)}, "got int64\\[1, 5, 1\\], model takes"),
             ({**good, "input_ids": np.ones((1, 5), dtype=np.int32)}, "got int32\\[1, 5\\]"),
             ({**good, "attention_mask": np.ones((1, 6), dtype=np.int64)}, "is 6, but input 'input_ids' has 5"),
             ({**good, "input_ids": np.full((1, 5), 10**9)}, "outside \\[-")]
    for arrays, said in cases:
        with pytest.raises(AutotuneError, match=said):
            model(arrays)
    assert model(good)["last_hidden_state"].shape == (1, 5, TINY.d_model)  # and it keeps serving


def test_a_range_job_tunes_its_shapes_and_compile_uses_the_records(tiny_bert, tmp_path):
    db = str(tmp_path / "db.sqlite")
    flags = [f"--shape={k}={v}" for k, v in BERT_RANGE.items()]
    cli = [sys.executable, "-m", "autotune.cli"]
    tuned = subprocess.run([*cli, "tune", str(tiny_bert), *flags, "--tune-shapes", "1x9,2x20", "--trials", "8",
                            "--db", db, "--json", "-q", "--no-confirm"],
                           capture_output=True, text=True, env=run_env(), timeout=600)
    assert tuned.returncode == 0, tuned.stderr
    built = subprocess.run([*cli, "compile", str(tiny_bert), *flags, "--db", db, "-o", str(tmp_path / "b.so"),
                            "--json"], capture_output=True, text=True, env=run_env(), timeout=600)
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["tasks_tuned"] > 0
    bad = subprocess.run([*cli, "tune", str(tiny_bert), *flags, "--tune-shapes", "3x9", "--trials", "8",
                          "--db", db], capture_output=True, text=True, env=run_env(), timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].endswith("dim 0 of 'input_ids' is 3, outside 1..2")
    history = subprocess.run([*cli, "history", "best", "--db", db, "--json"], capture_output=True, text=True,
                             env=run_env(), timeout=120)
    tasks = [row["task"] for row in json.loads(history.stdout)["rows"]]
    assert tasks and all(t.startswith(("bucket_1_12_", "bucket_2_20_")) for t in tasks), tasks


def test_bench_times_a_range_artifact_at_each_shape(bert_range_artifact):
    so_path, _ = bert_range_artifact
    cli = [sys.executable, "-m", "autotune.cli", "bench", str(so_path), "--count", "3", "--warmup", "1"]
    proc = subprocess.run([*cli, "--shapes", "1x5,2x17", "--json"], capture_output=True, text=True,
                          env=run_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    shapes = json.loads(proc.stdout)["shapes"]
    assert list(shapes) == ["1x5", "2x17"]
    assert shapes["2x17"]["inputs"]["input_ids"] == [2, 17]
    assert shapes["2x17"]["systems"]["onnxruntime"]["runs"] == 3
    bad = subprocess.run([*cli, "--shapes", "1x21", "--no-peers"], capture_output=True, text=True,
                         env=run_env(), timeout=120)
    assert bad.returncode == 2 and "--shapes 1x21: dim 1 of 'input_ids' is 21, outside 1..20" in bad.stderr


def test_a_larger_bucket_measured_faster_takes_the_smaller_ones_calls():
    from autotune.deploy.dispatch import faster_buckets
    from autotune.frontend.buckets import ShapePlan

    plan = ShapePlan({"batch": DimRange(1, 2), "seq": DimRange(1, 16)}, {"batch": [1, 2], "seq": [4, 8, 12, 16]},
                     {"input_ids": ["batch", "seq"]}, {"out": ["batch", "seq", 3]})
    seconds = {b.function: b.dims["batch"] * b.dims["seq"] * 1e-3 for b in plan.buckets()}
    seconds["bucket_1_12"] = 0.030  # slower than bucket_1_16 (0.016) and bucket_2_16 (0.032)
    seconds["bucket_2_8"] = 0.0165  # within 5 % of bucket_1_16's... which does not cover batch 2
    plan.faster = faster_buckets(plan, seconds)
    assert plan.faster == {"bucket_1_12": {"batch": 1, "seq": 16}}
    assert plan.bucket_for({"batch": 1, "seq": 9}).function == "bucket_1_16"
    assert plan.bucket_for({"batch": 2, "seq": 9}).function == "bucket_2_12"
    assert ShapePlan.from_dict(plan.as_dict()).faster == plan.faster


def test_a_dim_padding_would_change_is_never_served_by_a_larger_bucket():
    from autotune.deploy.dispatch import faster_buckets
    from autotune.frontend.buckets import ShapePlan

    plan = ShapePlan({"source": DimRange(4, 6), "target": DimRange(1, 8)}, {"source": [4, 5, 6], "target": [4, 8]},
                     {"input_ids": [1, "source"], "decoder_input_ids": [1, "target"]}, {"logits": [1, "target", 9]},
                     exact=["source"])
    seconds = {b.function: 1.0 for b in plan.buckets()}
    seconds["bucket_6_8"] = 0.1  # fastest of all, but it would pad the source
    plan.faster = faster_buckets(plan, seconds)
    assert plan.faster == {"bucket_6_4": {"source": 6, "target": 8}}  # only the target is padded further
    assert plan.bucket_for({"source": 4, "target": 3}).function == "bucket_4_4"


def test_a_translation_range_artifact_matches_onnxruntime_at_odd_lengths(tiny_translation, tmp_path):
    """Source (exact buckets) and target (padded past the causal horizon) both ranged."""
    import onnxruntime as ort

    so_path = tmp_path / "translation.so"
    built = autotune.compile(tiny_translation, so_path, {"input_ids": "1..2x4..5", "decoder_input_ids": "1..2x1..8"},
                             db=f"sqlite:///{tmp_path / 'db.sqlite'}")
    assert built.validation["passed"]
    model = autotune.load(so_path)
    assert model.plan.exact == ["input_ids_seq"]
    session = ort.InferenceSession(str(tiny_translation), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch, source, target in [(1, 4, 1), (2, 5, 7), (1, 5, 3), (2, 4, 8)]:
        feeds = {"input_ids": rng.integers(0, TINY.vocab, (batch, source)),
                 "decoder_input_ids": rng.integers(0, TINY.vocab, (batch, target))}
        ours, = model(feeds).values()
        reference, = session.run(None, feeds)
        assert ours.shape == reference.shape
        assert np.abs(ours - reference).max() <= 1e-4 * np.abs(reference).max()


def test_an_output_dim_the_model_names_stays_fixed_beside_a_range_of_one_rung_of_its_size():
    """A generator step's cache capacity (32, named by the model, not ranged) beside a source range
    whose one rung is 32: the capacity is not cropped to the source length of a call."""
    from autotune.frontend.buckets import Bucket
    from autotune.frontend.ranged import output_dims

    shapes = [(Bucket(f"bucket_{rows}_32", {"batch_size": rows, "source": 32}),
               {"present": (rows, 8, 64, 32), "hidden": (rows, 32, 512)}) for rows in (7, 8)]
    declared = {"present": ["batch_size", 8, 64, "cache_capacity"], "hidden": ["batch_size", "source", 512]}
    assert output_dims(shapes, declared) == {"present": ["batch_size", 8, 64, 32], "hidden": ["batch_size", "source", 512]}


def test_a_tuned_range_artifact_stores_each_weight_once(tmp_path):
    """A record of another schedule (TVM's default, a searched one) reads its weight unpacked while
    every other bucket's heuristic packs it:
    compile passes such a record over (its bucket takes the heuristic), so the tuned artifact holds
    no second copy of a weight (the smallest is 64 KB here). The record is made the fastest so
    that compile would otherwise choose it."""
    import sqlite3
    from dataclasses import replace

    model = write_example("bert", tmp_path / "bert.onnx", replace(TINY, d_model=128, ffn=256))
    heuristic = autotune.compile(model, tmp_path / "heuristic.so", BERT_RANGE, db=f"sqlite:///{tmp_path / 'h.db'}")
    db = tmp_path / "db.sqlite"
    autotune.tune(model, BERT_RANGE, db=f"sqlite:///{db}", trials=24, confirm=False, tune_shapes="2x20")
    with sqlite3.connect(db) as connection:
        unpacked = [row_id for row_id, tir, record in connection.execute(
            "SELECT r.id, w.tir_text, r.record_json FROM tuning_records r JOIN workloads w ON w.id = r.workload_id "
            "WHERE r.provenance != 'heuristic' AND r.latency_s IS NOT NULL")
            if "layout_free_buffers" in tir and "TransformLayout" not in record]
        assert unpacked, "the job measured no other schedule of a task with weights"
        connection.execute("UPDATE tuning_records SET latency_s = 1e-12 WHERE id = ?", (unpacked[0],))
    built = autotune.compile(model, tmp_path / "tuned.so", BERT_RANGE, db=f"sqlite:///{db}")
    assert built.records_passed_over >= 1 and unpacked[0] not in built.record_ids
    assert Path(built.artifact).stat().st_size <= Path(heuristic.artifact).stat().st_size + 16 * 1024
