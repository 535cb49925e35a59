"""The expert's last 20 %, guided: ``profile`` ranks kernels by headroom against this host's measured
roofs, and ``manual init`` hands over a task's best schedule as a module that reproduces it."""

from __future__ import annotations

import json

import pytest

import autotune
from autotune.cli import main

from .conftest import TINY_SHAPES, copy_database


@pytest.fixture(scope="module")
def artifact(tuned, tmp_path_factory):
    folder = tmp_path_factory.mktemp("expert")
    built = autotune.compile(tuned["model"], folder / "tiny.so", TINY_SHAPES, "host", tuned["db"], validate=False)
    return built["artifact"]


def test_profile_fields_are_present_and_consistent(artifact, tmp_path, capsys):
    assert main(["profile", artifact, "--rounds", "4", "--plots", str(tmp_path / "tiny"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    peaks = result["peaks"]
    assert peaks["fma_gflops"] > 0 and peaks["bandwidth_gbs"] > 0 and peaks["measured_at"]
    kernels = [k for k in result["kernels"] if k["bound"] != "runtime"]
    assert len(kernels) >= 10 and {"compute", "memory"} >= {k["bound"] for k in kernels}
    for k in kernels:
        assert k["headroom_us"] >= 0 and (k["us"] >= k["floor_us"] or k["below_the_roof"])
        assert 0 <= k["share_of_latency"] <= 1 and 0 <= k["headroom_share"] <= 1
        assert k["below_the_roof"] or (0 <= k["share_of_compute_peak"] <= 1 and 0 <= k["share_of_bandwidth"] <= 1)
        assert k["headroom_us"] == pytest.approx(max(k["us"] - k["floor_us"], 0))
    headroom = [k["headroom_us"] for k in kernels]
    assert headroom == sorted(headroom, reverse=True)
    assert result["kernels"].index(kernels[-1]) < len(kernels)  # the VM's builtins come after the kernels
    everything = sum(k["us"] for k in result["kernels"]) / 1e3
    assert everything == pytest.approx(result["kernel_sum_ms"])
    assert everything <= 1.1 * result["instrumented_p50_ms"]  # every interval lies inside an instrumented inference
    assert result["wall_p50_ms"] <= result["instrumented_p50_ms"] and result["calls"] >= len(kernels)
    assert result["instrument_us_per_call"] == pytest.approx(
        (result["instrumented_p50_ms"] - result["wall_p50_ms"]) * 1e3 / result["calls"])
    assert sorted(p.rsplit("_", 1)[-1] for p in result["plots"]) == ["headroom.png", "roofline.png"]
    assert all((tmp_path / f"tiny_{kind}.png").stat().st_size > 5000 for kind in ("roofline", "headroom"))


def test_manual_init_renders_a_module_that_reproduces_the_record(tuned, tmp_path, capsys):
    """Generated for a matmul with an epilogue, the attention task and a LayerNorm: each imports,
    registers for its workload, and replays the very schedule of the record it came from."""
    import tvm
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    from autotune.jobs.prepare import prepare
    from autotune.schedules.manual import load_schedules
    from autotune.store.engine import Store
    from autotune.store.metaschedule import SqlDatabase
    from autotune.targets.names import canonical

    db = copy_database(tuned["db"], tmp_path / "manual.db")
    prepared = prepare(tuned["model"], TINY_SHAPES, "host")
    database = SqlDatabase(Store(db), canonical(prepared.target))
    picks = [next(t for t in prepared.tasks if "matmul" in t.name and "add" in t.name),
             next(t for t in prepared.tasks if t.name.startswith("fused_attention")),
             next(t for t in prepared.tasks if "layer_norm" in t.name)]
    for task in picks:
        module = tmp_path / f"{task.name}.py"
        assert main(["manual", "init", task.structural_hash, "--db", db, "-o", str(module), "--json"]) == 0
        written = json.loads(capsys.readouterr().out)
        text = module.read_text()
        assert "MFLOP" in text and "headroom" in text and f"record {written['record_id']}" in text
        (schedule,) = load_schedules(module)
        assert schedule.applies_to(task)
        mine = tvm.s_tir.Schedule(task.mod)
        schedule.func(mine)
        row = database.chosen_row(task.mod)
        record = ms.database.TuningRecord.from_json(json.loads(row.record_json), database.commit_workload(task.mod))
        theirs = tvm.s_tir.Schedule(task.mod)
        record.trace.apply_to_schedule(theirs, remove_postproc=False)
        assert row.id == written["record_id"]
        assert tvm_ffi.structural_equal(mine.mod, theirs.mod), task.name
    assert main(["manual", "init", "no_such_task", "--db", db, "-o", str(tmp_path / "x.py")]) == 2
    assert "no task or workload 'no_such_task'" in capsys.readouterr().err
