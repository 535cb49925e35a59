"""Tune a tiny model into a temporary SQLite file, compile, load in a fresh process, match ORT."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
from sqlalchemy import create_engine, text

import autotune

from .conftest import TINY_SHAPES, run_env


def test_tune_summary_and_database(tuned):
    summary = tuned["summary"]
    assert summary["tasks"] > 10
    assert summary["trials_measured"] >= 96
    assert summary["failures"] == 0
    assert summary["estimated_latency_ms"] > 0
    with create_engine(tuned["db"]).connect() as conn:
        counts = dict(conn.execute(text(
            "SELECT provenance, count(*) FROM tuning_records GROUP BY provenance")).all())
        status = conn.execute(text("SELECT status FROM jobs WHERE id = :id"),
                              {"id": summary["job_id"]}).scalar()
        workloads = conn.execute(text("SELECT count(*) FROM workloads")).scalar()
    assert status == "finished"
    assert counts["default"] == summary["tasks"]  # every task's naive nest measured once
    assert counts.pop("confirm") == len(summary["confirmed"]) > 0  # re-timed finalists: not trials
    assert sum(counts.values()) == summary["trials_measured"]
    assert workloads == summary["tasks"]


LOADER = """
import json, sys
import numpy as np
import autotune
model = autotune.load(sys.argv[1])
inputs = dict(np.load(sys.argv[2]))
out = model(inputs)
np.save(sys.argv[3], out["logits"])
print(json.dumps({"compiler_loaded": "tvm.relax" in sys.modules}))
"""


def test_compile_load_in_fresh_process_matches_onnxruntime(tuned, tmp_path):
    so_path = tmp_path / "tiny.so"
    built = autotune.compile(tuned["model"], so_path, TINY_SHAPES, "host", tuned["db"])
    assert built["validation"]["passed"] and built["validation"]["max_rel_err"] < 1e-4
    assert built["tasks_tuned"] == built["tasks"]
    manifest = json.loads((tmp_path / "tiny.so.json").read_text())
    assert manifest["record_ids"] == built["record_ids"] and manifest["job_ids"] == [tuned["summary"]["job_id"]]
    assert [i["name"] for i in manifest["inputs"]] == ["input_ids", "decoder_input_ids"]
    assert "tuple" not in _vm_code(so_path)  # packed weights are not re-tupled on every inference
    assert b".debug_info" not in so_path.read_bytes()  # no DWARF: nothing the runtime reads

    rng = np.random.default_rng(7)
    inputs = {"input_ids": rng.integers(0, 64, (1, 16)), "decoder_input_ids": rng.integers(0, 64, (1, 8))}
    np.savez(tmp_path / "inputs.npz", **inputs)
    proc = subprocess.run([sys.executable, "-c", LOADER, str(so_path), str(tmp_path / "inputs.npz"),
                           str(tmp_path / "out.npy")], capture_output=True, text=True, env=run_env(),
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"compiler_loaded": False}
    session = ort.InferenceSession(str(tuned["model"]), providers=["CPUExecutionProvider"])
    (reference,) = session.run(["logits"], inputs)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), reference, rtol=1e-4, atol=1e-4)


def test_second_model_reuses_shared_workloads(tuned, tiny_encoder):
    """The encoder shares its layer's tasks with the translation model's encoder."""
    summary = autotune.tune(tiny_encoder, {"input_ids": (1, 16)}, "host", tuned["db"], trials=8)
    assert summary["tasks_from_database"] >= 3
    assert summary["job_id"] != tuned["summary"]["job_id"]


def test_bench_reports_percentiles_side_by_side(tuned, tmp_path):
    from autotune.bench.bench import bench
    from autotune.bench.timing import BenchConfig

    so_path = tmp_path / "tiny.so"
    autotune.compile(tuned["model"], so_path, TINY_SHAPES, "host", tuned["db"], validate=False)
    result = bench(so_path, BenchConfig(count=20, warmup=2, untuned_runs=3))
    assert {name: stats["runs"] for name, stats in result["systems"].items()} == \
        {"autotune": 20, "onnxruntime": 20, "untuned_tvm": 3}  # untuned: a few runs, after the turns
    for stats in result["systems"].values():
        assert 0 < stats["p50_ms"] <= stats["p90_ms"] <= stats["p95_ms"] <= stats["p99_ms"]
        assert stats["throughput_per_s"] > 0
    assert result["systems"]["onnxruntime"]["p50_vs_onnxruntime"] == 1.0
    turns = result["systems"]["autotune"]["turns_vs_onnxruntime"]
    assert turns["turns"] == 10 and 0 < turns["lowest"] <= turns["median"] <= turns["highest"]
    assert "turns_vs_onnxruntime" not in result["systems"]["untuned_tvm"]  # not timed in the turns


def test_bench_gives_each_systems_ratio_to_openvino_turn_by_turn(tuned, tmp_path, capsys):
    """With OpenVINO among the peers, every system's p50 and per-turn ratios are given against it as
    well as against ONNX Runtime (the JSON and the table)."""
    import pytest

    pytest.importorskip("openvino", reason="the peers extra (OpenVINO) is not installed")
    from autotune.cli import main

    so_path = tmp_path / "tiny.so"
    autotune.compile(tuned["model"], so_path, TINY_SHAPES, "host", tuned["db"], validate=False)
    args = ["bench", str(so_path), "--peers", "onnxruntime,openvino", "--count", "10", "--warmup", "1"]
    assert main([*args, "--json"]) == 0
    systems = json.loads(capsys.readouterr().out)["systems"]
    assert systems["openvino"]["p50_vs_openvino"] == 1.0 and "turns_vs_openvino" not in systems["openvino"]
    turns = systems["autotune"]["turns_vs_openvino"]
    assert turns["turns"] == systems["openvino"]["turns_vs_onnxruntime"]["turns"] >= 5
    assert 0 < turns["lowest"] <= turns["median"] <= turns["highest"]
    assert main(args) == 0
    assert "per_turn_vs_openvino" in capsys.readouterr().out


def test_bench_takes_turns_with_another_build_of_the_same_shapes(tuned, tmp_path, capsys):
    """``--other NAME=PATH``: say, the build in production beside the new one, in the same run."""
    import pytest

    from autotune.cli import main

    builds = {name: tmp_path / f"{name}.so" for name in ("new", "unfused", "longer")}
    autotune.compile(tuned["model"], builds["new"], TINY_SHAPES, "host", tuned["db"], validate=False)
    autotune.compile(tuned["model"], builds["unfused"], TINY_SHAPES, "host", tuned["db"], validate=False,
                     fusion="none")
    autotune.compile(tuned["model"], builds["longer"], {**TINY_SHAPES, "decoder_input_ids": (1, 9)}, "host",
                     tuned["db"], validate=False)
    bench = ["bench", str(builds["new"]), "--no-peers", "--count", "5", "--warmup", "1", "--json"]
    assert main([*bench, "--other", f"unfused={builds['unfused']}"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {name: stats["runs"] for name, stats in result["systems"].items()} == {"autotune": 5, "unfused": 5}
    assert main([*bench, "--other", f"longer={builds['longer']}"]) == 2
    assert "longer" in capsys.readouterr().err
    assert main([*bench, "--other", f"onnxruntime={builds['unfused']}"]) == 2
    assert "onnxruntime" in capsys.readouterr().err
    assert main([*bench, "--other", f"a={builds['unfused']}", "--other", f"a={builds['new']}"]) == 2
    assert "unique" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*bench, "--other", str(builds["unfused"])])
    assert "NAME=PATH" in capsys.readouterr().err


def _vm_code(so_path) -> str:
    """The VM bytecode of an artifact, as TVM prints it."""
    import tvm
    from tvm.relax import VMExecutable

    return VMExecutable(tvm.runtime.load_module(str(so_path))).as_text()
