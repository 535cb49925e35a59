"""``manual init``: a task's current best schedule, written out as a hand-schedule module to edit.

The database holds the trace of every task's chosen record (``store.selection``); MetaSchedule
renders a trace as the ``tvm.s_tir.Schedule`` calls that replay it, sampling decisions included.
The module registers those calls with ``@autotune.manual.schedule`` for the task's workload hash,
so measuring it unchanged measures the record it came from; its docstring gives the task's
buffers, FLOPs and bytes, the record's latency, and its headroom against this host's roofs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from ..common.results import Result
from ..errors import AutotuneError
from ..store.engine import Store
from ..store.schema import Job, JobTask, TargetRow, TuningRecordRow, WorkloadRow
from ..store.selection import Selection
from ..store.tvm_json import workload_from_json


@dataclass
class ManualInit(Result):
    """The module written, and the record it came from."""

    path: str
    task: str
    workload_hash: str
    record_id: int
    provenance: str
    latency_ms: float
    name: str


def _workload(store: Store, task: str) -> tuple[WorkloadRow, str, int]:
    """The workload ``task`` names (a task name or a workload hash), its task name and the target
    of the newest job that tuned it."""
    def work(session):
        return session.execute(
            select(WorkloadRow, JobTask.task_name, Job.target_id).join(JobTask, JobTask.workload_id == WorkloadRow.id)
            .join(Job, Job.id == JobTask.job_id)
            .where((JobTask.task_name == task) | (WorkloadRow.structural_hash == task))
            .order_by(Job.id.desc())).all()
    found = store.read(work)
    if not found:
        raise AutotuneError(f"no task or workload {task!r} in --db {store.url} (autotune tasks MODEL lists them)")
    workloads = {row.id: row for row, _, _ in found}
    if len(workloads) > 1:
        hashes = ", ".join(sorted(row.structural_hash for row in workloads.values()))
        raise AutotuneError(f"{task!r} names {len(workloads)} workloads (models or shapes differ): give one "
                            f"of their hashes instead: {hashes}")
    row, name, target_id = found[0]
    return row, name, target_id


def _chosen(store: Store, workload_id: int, target_id: int) -> TuningRecordRow:
    summaries = store.record_summaries([workload_id], target_id).get(workload_id, [])
    pick = Selection().choose(workload_id, summaries)
    if pick is None:
        raise AutotuneError(f"workload {workload_id} has no successful record in --db {store.url}: tune it first")
    return store.read(lambda session: session.get(TuningRecordRow, pick.id))


def _headroom_text(workload, latency_s: float, target_json: dict) -> str:
    """The task's work and its floor at this host's roofs (measured here, or cached)."""
    from tvm.s_tir.analysis import estimate_tir_flops

    from ..bench.peaks import host_peaks
    from ..targets.host import usable_cores
    from .profile import buffer_bytes

    func = workload.mod["main"]
    flops, bytes_ = float(estimate_tir_flops(workload.mod)), buffer_bytes(func)
    peaks = host_peaks(int(target_json.get("num-cores", 0)) or usable_cores())
    floor_s = peaks.floor_s(flops, bytes_)
    buffers = ", ".join(f"{p.name} {p.dtype}{[int(d) for d in p.shape]}" for p in func.params if hasattr(p, "shape"))
    return (f"Buffers: {buffers}.\n"
            f"Work: {flops / 1e6:.3f} MFLOP, {bytes_ / 1e3:.1f} kB of buffers. At this host's roofs "
            f"({peaks.fma_gflops:.0f} GFLOP/s fp32 FMA, {peaks.bandwidth_gbs:.0f} GB/s on {peaks.threads} threads, "
            f"measured {peaks.measured_at}) it takes at least {floor_s * 1e3:.4f} ms: headroom "
            f"{max(latency_s - floor_s, 0.0) * 1e3:.4f} ms against the record's {latency_s * 1e3:.4f} ms "
            f"(timed alone; `autotune profile` times it inside the model).")


MODULE = '''"""{task}: the schedule of record {record_id} ({provenance}), to edit.

Workload {workload_hash} (TIR sha256 {content}) on target {target}.
{headroom}

Written by `autotune manual init`. Measure it with `autotune tune MODEL --manual {path}`: it is
recorded with provenance manual, and `autotune history best` shows it where it wins.
"""

import tvm  # noqa: F401  (the calls below name tvm.tirx.IndexMap and TVMScript's T)
from tvm.script import tirx as T  # noqa: F401, N812

from autotune import manual


@manual.schedule({name!r}, workload_hash={workload_hash!r})
def schedule(sch):
    """The record's trace as ``tvm.s_tir.Schedule`` calls, sampling decisions included."""
{body}
'''


# Annotations whose value is a boolean: TVM's trace printer writes True as 1, an integer, which
# replays as another (structurally different) schedule.
BOOLEAN_ANNOTATIONS = ("meta_schedule.layout_rewrite_preproc",)


def trace_lines(trace) -> list[str]:
    """A trace as the Python statements that replay it exactly."""
    lines = list(trace.as_python(remove_postproc=False)) or ["pass"]
    for key in BOOLEAN_ANNOTATIONS:
        lines = [line.replace(f'ann_key="{key}", ann_val=1)', f'ann_key="{key}", ann_val=True)') for line in lines]
    return lines


def write_manual_schedule(store: Store, task: str, output: str | Path, name: str | None = None) -> ManualInit:
    """Write the hand-schedule module of ``task``'s chosen record to ``output``."""
    from tvm.s_tir import meta_schedule as ms

    row, task_name, target_id = _workload(store, task)
    record_row = _chosen(store, row.id, target_id)
    workload = workload_from_json(json.loads(row.workload_json))
    record = ms.database.TuningRecord.from_json(json.loads(record_row.record_json), workload)
    target = json.loads(store.read(lambda session: session.get(TargetRow, target_id)).canonical)
    lines = trace_lines(record.trace)
    name = name or re.sub(r"\W+", "-", f"{task_name}-from-{record_row.id}")
    path = Path(output)
    text = MODULE.format(task=task_name, record_id=record_row.id, provenance=record_row.provenance,
                         workload_hash=row.structural_hash, content=row.content_sha256[:16],
                         target=target.get("mcpu") or target.get("kind"),
                         headroom=_headroom_text(workload, record_row.latency_s, target), path=path, name=name,
                         body="\n".join(f"    {line}" for line in lines))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return ManualInit(str(path), task_name, row.structural_hash, record_row.id, record_row.provenance,
                      record_row.latency_s * 1e3, name)
