#!/usr/bin/env python3
"""``manual init`` round trip: each generated module against the record it was rendered from.

For each task (default: a matmul with a fused epilogue, the attention task and a LayerNorm) it
writes the module with ``autotune manual init``, loads and applies it, and measures it and the
record's own trace in turns (``--rounds`` rounds, the same measurer, same run) into a copy of the
database. Prints JSON: per task both medians and their ratio, and whether the two schedules are
structurally the same module.

    python scripts/manual_roundtrip.py MODEL --db URL [--shape input_ids=1,32 ...] [--task NAME ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from autotune.cli.args import shapes
from autotune.common.records import Provenance
from autotune.jobs.manual_init import write_manual_schedule
from autotune.jobs.prepare import prepare
from autotune.measure.config import MeasureConfig
from autotune.measure.measurer import Measurer
from autotune.schedules.manual import load_schedules
from autotune.search.fixed import FixedSchedule, measure_schedules
from autotune.store.engine import Store, copy_sqlite
from autotune.store.metaschedule import SqlDatabase
from autotune.targets.names import canonical

KINDS = {"matmul with epilogue": lambda n: "matmul" in n and "add" in n,
         "attention": lambda n: n.startswith("fused_attention"),
         "layer norm": lambda n: "layer_norm" in n}


def default_tasks(tasks) -> list:
    """One task of each kind in ``KINDS``, the largest by FLOPs where several match."""
    from tvm.s_tir.analysis import estimate_tir_flops

    picks = []
    for kind, matches in KINDS.items():
        found = [t for t in tasks if matches(t.name)]
        if not found:
            raise SystemExit(f"the model has no {kind} task; name tasks with --task")
        picks.append(max(found, key=lambda t: float(estimate_tir_flops(t.mod))))
    return picks


def record_schedule(database: SqlDatabase, task):
    """The chosen record's trace replayed on the task's module."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    row = database.chosen_row(task.mod)
    record = ms.database.TuningRecord.from_json(json.loads(row.record_json), database.commit_workload(task.mod))
    sch = tvm.s_tir.Schedule(task.mod)
    record.trace.apply_to_schedule(sch, remove_postproc=False)
    return sch


def round_trip(task, database: SqlDatabase, store: Store, folder: Path, measurer, rounds: int) -> dict:
    import tvm
    import tvm_ffi

    written = write_manual_schedule(store, task.structural_hash, folder / f"{task.name}.py")
    (schedule,) = load_schedules(written.path)
    mine = tvm.s_tir.Schedule(task.mod)
    schedule.func(mine)
    theirs = record_schedule(database, task)
    times: dict[str, list[float]] = {"manual": [], "record": []}
    for _ in range(rounds):  # in turns, so drift hits both alike
        manual_s, record_s = measure_schedules(
            [FixedSchedule(task, mine, Provenance.MANUAL, schedule.source()),
             FixedSchedule(task, theirs, Provenance.SEARCH)], database, measurer)
        times["manual"].append(manual_s * 1e3)
        times["record"].append(record_s * 1e3)
    manual_ms, record_ms = statistics.median(times["manual"]), statistics.median(times["record"])
    return {"task": task.name, "record_id": written.record_id, "provenance": written.provenance,
            "recorded_ms": written.latency_ms, "manual_ms": manual_ms, "record_ms": record_ms,
            "ratio": manual_ms / record_ms, "same_module": bool(tvm_ffi.structural_equal(mine.mod, theirs.mod)),
            "module": written.path}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--db", required=True, help="SQLite URL or path of the tuned database (copied, never written)")
    parser.add_argument("--shape", action="append", help="NAME=DIMxDIM, as for tune")
    parser.add_argument("--target", default="host")
    parser.add_argument("--task", action="append", help="task name (default: one of each kind, see KINDS)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="manual-roundtrip-"))
    store = Store(copy_sqlite(args.db, folder / "copy.db"))
    prepared = prepare(args.model, shapes(args.shape) or None, args.target)
    database = SqlDatabase(store, canonical(prepared.target))
    tasks = ([t for t in prepared.tasks if t.name in args.task] if args.task else default_tasks(prepared.tasks))
    with Measurer(MeasureConfig()) as measurer:
        rows = [round_trip(t, database, store, folder, measurer, args.rounds) for t in tasks]
    print(json.dumps({"model": args.model, "rounds": args.rounds, "tasks": rows}, indent=2))


if __name__ == "__main__":
    main()
