#!/usr/bin/env python3
"""Hand schedule vs a small search budget, on the bundled encoder size (1 layer, d=128, seq 32).

Tunes with ``search_spaces/manual/dense_cpu.py`` and ``--trials`` (default 40: about two search
trials per task after the default nests), then prints JSON: for every task the hand schedule
matched, its measured latency next to the best searched and the naive (default) one.

    python scripts/bench_manual.py --trials 40
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from sqlalchemy import func, select

import autotune
from autotune.store.engine import Store
from autotune.models import ModelConfig, write_example
from autotune.store.schema import JobTask, TuningRecordRow

MANUAL = Path(__file__).resolve().parents[1] / "search_spaces" / "manual" / "dense_cpu.py"


def best_by_provenance(store: Store, job_id: int) -> dict[str, dict[str, float]]:
    """{task: {provenance: best latency in ms}} for the job's tasks."""
    with store.session() as session:
        rows = session.execute(
            select(JobTask.task_name, TuningRecordRow.provenance, func.min(TuningRecordRow.latency_s))
            .join(TuningRecordRow, TuningRecordRow.workload_id == JobTask.workload_id)
            .where(JobTask.job_id == job_id, TuningRecordRow.latency_s.is_not(None))
            .group_by(JobTask.task_name, TuningRecordRow.provenance)).all()
    table: dict[str, dict[str, float]] = {}
    for task, provenance, latency in rows:
        table.setdefault(task, {})[provenance] = latency * 1e3
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--trials", type=int, default=40)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-manual-"))
    model = write_example("encoder", folder / "encoder.onnx", ModelConfig(encoder_layers=1))
    db = f"sqlite:///{folder / 'manual.db'}"
    summary = autotune.tune(model, {"input_ids": (1, 32)}, "host", db, trials=args.trials, manual=[MANUAL])
    table = best_by_provenance(Store(db), summary["job_id"])
    rows = [{"task": task, **{f"{p}_ms": v for p, v in sorted(by.items())}}
            for task, by in table.items() if "manual" in by]
    print(json.dumps({"trials": summary["trials_measured"], "tasks": rows}, indent=2))


if __name__ == "__main__":
    main()
