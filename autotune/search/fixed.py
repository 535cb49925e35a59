"""Fixed schedules measured like search candidates: heuristic ones, the naive nest, hand-written ones.

Each is built and timed by the same measurer as the search and committed with its provenance, so
compile chooses among all of them alike (``store.selection``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..backends import backend_for
from ..common.records import Provenance
from ..common.text import first_line
from ..frontend.tasks import Task
from ..measure.outcome import outcome_of
from ..schedules.manual import ManualSchedule

DEFAULTS_PER_ROUND = 8  # tasks whose fixed schedules are measured in one round between budget checks


@dataclass(frozen=True)
class FixedSchedule:
    """A schedule to measure for ``task`` as it is, recorded with ``provenance`` and ``source``."""

    task: Task
    schedule: object  # a tvm.s_tir.Schedule of the task's module
    provenance: Provenance
    source: dict | None = None


def measure_schedules(items: list[FixedSchedule], database, measurer) -> list[float | None]:
    """Build and time ``items`` and commit each as a record; each one's latency in seconds, or None
    where it failed (the reason is in its record)."""
    from tvm.s_tir import meta_schedule as ms

    args = [ms.arg_info.ArgInfo.from_entry_func(item.schedule.mod) for item in items]
    built = measurer.builder.build([ms.builder.BuilderInput(item.schedule.mod, item.task.target)
                                    for item in items])
    latencies: list[float | None] = []
    for item, arg_info, result in zip(items, args, built):
        ran = None if result.error_msg else measurer.run_built(result.artifact_path, item.task.target,
                                                                arg_info)
        outcome = outcome_of(result, ran)
        record = ms.database.TuningRecord(item.schedule.trace, database.commit_workload(item.task.mod),
                                          outcome.run_secs, item.task.target, arg_info)
        database.commit_record(record, outcome, provenance=item.provenance, source=item.source,
                               runner=measurer.runner_id)
        latencies.append(outcome.latency_s)
    return latencies


def unmeasured_defaults(task: Task, database) -> list[FixedSchedule]:
    """A task's fixed schedules that ``database`` has not timed yet: each heuristic schedule (known by
    the hash of the scheduled function, so an improved rule is timed again in a database that holds
    the old one's records), then the unscheduled nest."""
    import tvm
    import tvm_ffi

    timed = {s.get("schedule") for s in database.recorded_sources(task.mod, Provenance.HEURISTIC)}
    items = []
    for sch in backend_for(task.target).heuristic_schedules(task.mod, task.target):
        fingerprint = str(tvm_ffi.structural_hash(sch.mod))
        if fingerprint not in timed:
            items.append(FixedSchedule(task, sch, Provenance.HEURISTIC, {"schedule": fingerprint}))
    if not database.has_record(task.mod, Provenance.DEFAULT):
        items.append(FixedSchedule(task, tvm.s_tir.Schedule(task.mod), Provenance.DEFAULT))
    return items


def measure_defaults(tasks: list[Task], database, measurer,
                     may_continue: Callable[[int, list[float]], bool] = lambda *_: True,
                     room: Callable[[int], int] = lambda _: 1 << 30) -> tuple[int, list[float]]:
    """Measure each task's fixed schedules not yet timed: its heuristic ones and its naive nest.

    The naive nest runs serially, and for tiny tasks (reshape, transpose, small matmuls) that beats
    every parallel schedule MetaSchedule offers. The heuristic schedules (tiled, vectorised, serial
    and parallel) are what a task the search never reaches gets. Runs in rounds of up to
    ``DEFAULTS_PER_ROUND`` tasks, never more measurements than ``room(measured so far)``, while
    ``may_continue(measured so far, round durations)``; returns (measurements, round durations).
    """
    todo = [items for items in (unmeasured_defaults(t, database) for t in tasks) if items]
    durations: list[float] = []
    measured = 0
    while todo and may_continue(measured, durations):
        started = time.monotonic()
        chunk: list[FixedSchedule] = []
        while todo and len(chunk) < DEFAULTS_PER_ROUND * 3:
            if len(chunk) + len(todo[0]) > room(measured):
                break
            chunk += todo.pop(0)
        if not chunk:  # the trial budget cannot take the next task's schedules: the search gets the rest
            break
        for provenance in (Provenance.HEURISTIC, Provenance.DEFAULT):
            mine = [item for item in chunk if item.provenance == provenance]
            if mine:
                measure_schedules(mine, database, measurer)
        measured += len(chunk)
        durations.append(time.monotonic() - started)
    return measured, durations


@dataclass
class ManualResult:
    """How one hand schedule fared on one task: its latency, or why it failed."""

    schedule: str
    task: str
    latency_ms: float | None = None
    error: str | None = None

    def as_dict(self) -> dict:
        return dict(vars(self))


def _applied(item: ManualSchedule, task: Task):
    import tvm

    sch = tvm.s_tir.Schedule(task.mod)
    item.func(sch)
    return sch


def measure_manual(tasks: list[Task], schedules: list[ManualSchedule], database, measurer
                   ) -> list[ManualResult]:
    """Apply, measure and record every (schedule, matching task); one result each."""
    results, items = [], []
    for item in schedules:
        for task in (t for t in tasks if item.applies_to(t)):
            try:
                items.append(FixedSchedule(task, _applied(item, task), Provenance.MANUAL, item.source()))
                results.append(ManualResult(item.name, task.name))
            except Exception as err:  # a broken hand schedule is reported, never fatal
                results.append(ManualResult(item.name, task.name, error=f"apply failed: "
                                            f"{type(err).__name__}: {first_line(err, 200)}"))
    latencies = iter(measure_schedules(items, database, measurer) if items else [])
    for result in results:
        if result.error is None:
            latency = next(latencies)
            result.latency_ms = None if latency is None else latency * 1e3
            result.error = None if latency is not None else "build or run failed (see its record)"
    return results
