#!/usr/bin/env python3
"""Tuning throughput: stock MetaSchedule ``tune_relax`` vs autotune, same model, same trial budget.

Prints one JSON object: measured trials per minute of both, their ratio, the estimated latency each
reached (sum over tasks of weight × best measured latency; tasks without a record count their
naive loop nest, measured once by autotune for both), autotune's wall-time split between search,
build and run, and a fresh-process re-measurement of autotune's best schedule of the heaviest task.

    python scripts/bench_tuning.py --trials 128             # the issue's setting (stock: ~1 h)
    python scripts/bench_tuning.py --trials 32 --model-size small
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from autotune.store.engine import Store
from autotune.store.metaschedule import SqlDatabase
from autotune.jobs.prepare import prepare
from autotune.measure.measurer import Measurer
from autotune.models import TINY, ModelConfig, write_example
from autotune.search.budget import Budget
from autotune.search.driver import search
from autotune.search.fixed import measure_defaults
from autotune.targets.names import canonical

SIZES = {"small": TINY, "bundled": ModelConfig(encoder_layers=1, decoder_layers=0)}


def _encoder(size: str, folder: Path):
    path = write_example("encoder", folder / f"encoder_{size}.onnx", SIZES[size])
    return prepare(path, {"input_ids": (1, 32)}, "host")


def _estimate_ms(tasks, best_s: dict[str, float], default_s: dict[str, float]) -> float:
    return 1e3 * sum(t.weight * best_s.get(t.name, default_s[t.name]) for t in tasks)


def run_stock(prepared, trials: int, folder: Path) -> dict:
    """Stock ``tune_relax``: LocalBuilder, LocalRunner, JSON database, gradient scheduler."""
    from tvm.s_tir import meta_schedule as ms

    start = time.monotonic()
    with ms.Profiler() as profiler:
        database = ms.relax_integration.tune_relax(
            mod=prepared.fused, params={}, target=prepared.target,
            work_dir=str(folder / "stock"), max_trials_global=trials)
    seconds = time.monotonic() - start
    records = database.get_all_tuning_records()
    ok = [r for r in records if r.run_secs and min(float(s) for s in r.run_secs) < 1e9]
    best: dict[str, float] = {}
    for task in prepared.tasks:
        top = database.get_top_k(database.commit_workload(task.mod), 1) if database.has_workload(task.mod) else []
        if top:
            best[task.name] = sum(float(s) for s in top[0].run_secs) / len(top[0].run_secs)
    return {"trials_measured": len(records), "successful": len(ok), "seconds": round(seconds, 1),
            "trials_per_min": round(60 * len(records) / seconds, 2), "best": best,
            "profile_s": {k: round(float(v), 2) for k, v in profiler.get().items()
                          if k in ("Total", "EvoSearch", "LocalBuilder", "LocalRunner")}}


def run_autotune(prepared, trials: int, store: Store) -> dict:
    database = SqlDatabase(store, canonical(prepared.target))
    with Measurer() as measurer:
        measure_defaults(prepared.tasks, database, measurer)  # spent before the clock, as for stock
        start = time.monotonic()
        result = search(prepared.tasks, database, measurer, Budget(trials=trials))
        seconds = time.monotonic() - start
    best = {p.task.name: p.best_s for p in result.tasks if p.best_s is not None}
    return {"trials_measured": result.trials_measured, "failures": result.failures,
            "seconds": round(seconds, 1), "trials_per_min": round(60 * result.trials_measured / seconds, 2),
            "time_split_s": result.time_split, "best": best}


def remeasure_best(prepared, store: Store) -> dict:
    """Re-time the best record of the heaviest task in fresh worker processes."""
    from tvm.s_tir import meta_schedule as ms

    task = prepared.tasks[0]
    database = SqlDatabase(store, canonical(prepared.target))
    record = database.get_top_k(database.commit_workload(task.mod), 1)[0]
    sch = record.as_measure_candidate()
    with Measurer() as measurer:
        built = measurer.builder.build([ms.builder.BuilderInput(sch.sch.mod, prepared.target)])[0]
        ran = measurer.runner.run([ms.runner.RunnerInput(built.artifact_path, "cpu", sch.args_info)])[0].result()
    stored = float(record.run_secs[0])
    again = float(ran.run_secs[0])
    return {"task": task.name, "stored_ms": stored * 1e3, "remeasured_ms": again * 1e3,
            "ratio": round(again / stored, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--trials", type=int, default=128)
    parser.add_argument("--model-size", choices=list(SIZES), default="bundled")
    parser.add_argument("--only", choices=["stock", "autotune"],
                        help="run one side only (e.g. stock on a busy machine: its rate is bound by timeouts)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-tuning-"))
    prepared = _encoder(args.model_size, folder)
    store = Store(f"sqlite:///{folder / 'autotune.db'}")
    database = SqlDatabase(store, canonical(prepared.target))
    report = {"model": f"encoder ({args.model_size})", "tasks": len(prepared.tasks),
              "trial_budget": args.trials}
    if args.only == "stock":
        with Measurer() as measurer:
            measure_defaults(prepared.tasks, database, measurer)
    else:
        ours = run_autotune(prepared, args.trials, store)
        report["autotune"] = ours
        report["remeasure_best_in_fresh_process"] = remeasure_best(prepared, store)
    default_s = {t.name: next(r.latency_s for r in database.best_rows(t.mod, 100)
                              if r.provenance == "default") for t in prepared.tasks}
    if "autotune" in report:
        report["autotune_estimated_ms"] = _estimate_ms(prepared.tasks, ours.pop("best"), default_s)
    if args.only != "autotune":
        stock = run_stock(prepared, args.trials, folder)
        report["stock"] = stock
        report["stock_estimated_ms"] = _estimate_ms(prepared.tasks, stock.pop("best"), default_s)
        if "autotune" in report:
            report["trials_per_min_ratio"] = round(ours["trials_per_min"] / max(stock["trials_per_min"], 1e-9), 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
