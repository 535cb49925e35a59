"""The rows of tuning jobs: a job opened or resumed, what it spent, its tasks, its artifacts."""

from __future__ import annotations

import datetime as dt
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import and_, func, or_, select, update

from ..common.processes import process_alive
from ..common.records import Provenance
from ..errors import AutotuneError
from .engine import Store
from .schema import Artifact, ArtifactRecord, Job, JobTask, Model, TuningRecordRow, utcnow

UNFINISHED_STATES = ("running", "interrupted")  # ``schema.UNFINISHED``
LEASE_S = 60.0  # a lease not renewed for this long belongs to a process that died
HEARTBEAT_S = LEASE_S / 4  # how often a running job renews its lease


class JobRunning(AutotuneError):
    """Another live process is running the job this command would resume."""


def model_id(store: Store, name: str, sha256: str, input_shapes: dict) -> int:
    """The id of the model row (name, file hash), created if new."""
    def work(session) -> int:
        row = session.scalars(select(Model).where(Model.sha256 == sha256, Model.name == name)).first()
        if row is None:
            row = Model(name=name, sha256=sha256, input_shapes=input_shapes)
            session.add(row)
            session.flush()
        return row.id
    return store.get_or_create(work)


@dataclass(frozen=True)
class Holder:
    """The process that holds (or wants) a job's lease."""

    pid: int
    host: str

    @classmethod
    def this_process(cls) -> Holder:
        return cls(os.getpid(), socket.gethostname())


def _stale_before() -> dt.datetime:
    return utcnow() - dt.timedelta(seconds=LEASE_S)


def _as_utc(moment: dt.datetime | None) -> dt.datetime | None:
    """A stored time as aware UTC (SQLite hands naive ones back)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=dt.timezone.utc)


def _refuse(job: Job) -> None:
    age = (utcnow() - _as_utc(job.heartbeat_at)).total_seconds()
    raise JobRunning(f"job {job.id} of this command is running: pid {job.lease_pid} on {job.lease_host} "
                     f"(heartbeat {age:.0f} s ago); wait for it, or rerun after it stops to resume")


def _take_lease(session, job: Job, holder: Holder) -> bool:
    """Take ``job``'s lease if it is free, stale, ours, or held by a process of this host that is
    gone (one atomic update, so two processes never both take it)."""
    free = or_(Job.lease_pid.is_(None), Job.heartbeat_at.is_(None), Job.heartbeat_at < _stale_before(),
               and_(Job.lease_pid == holder.pid, Job.lease_host == holder.host))
    if job.lease_host == holder.host and job.lease_pid is not None and not process_alive(job.lease_pid):
        free = or_(free, and_(Job.lease_pid == job.lease_pid, Job.lease_host == job.lease_host))
    taken = session.execute(update(Job).where(Job.id == job.id, free).values(
        lease_pid=holder.pid, lease_host=holder.host, heartbeat_at=utcnow(), status="running")
        .execution_options(synchronize_session=False))
    return taken.rowcount == 1


def open_job(store: Store, resume_key: str, model: int, target: int, budget_trials: int | None,
             budget_seconds: float | None, versions: dict, holder: Holder, settings: dict | None = None
             ) -> tuple[int, bool]:
    """The unfinished job with ``resume_key`` (resumed), or a new one, its lease taken by
    ``holder``; returns (id, resumed). A job whose lease another live process holds is refused
    (``JobRunning``); one whose holder stopped renewing it (died) is taken over."""
    def work(session) -> tuple[int, bool]:
        job = session.scalars(select(Job).where(Job.resume_key == resume_key,
                                                Job.status.in_(UNFINISHED_STATES))).first()
        if job is not None:
            if not _take_lease(session, job, holder):
                _refuse(job)
            return job.id, True
        job = Job(model_id=model, target_id=target, resume_key=resume_key, status="running",
                  budget_trials=budget_trials, budget_seconds=budget_seconds, host=holder.host,
                  versions=versions, settings=settings, lease_pid=holder.pid, lease_host=holder.host,
                  heartbeat_at=utcnow())
        session.add(job)
        session.flush()
        return job.id, False
    return store.get_or_create(work)  # two new jobs of one command clash on the unique index


def renew_lease(store: Store, job_id: int, holder: Holder) -> None:
    """Say the job's holder is alive."""
    def work(session) -> None:
        session.execute(update(Job).where(Job.id == job_id, Job.lease_pid == holder.pid,
                                          Job.lease_host == holder.host).values(heartbeat_at=utcnow())
                        .execution_options(synchronize_session=False))
    store.write(work)


def job_spent(store: Store, job_id: int) -> tuple[int, float]:
    """Trials (confirmations excluded) and tuning seconds a job has spent so far."""
    def work(session) -> tuple[int, float]:
        trials = session.scalar(select(func.count(TuningRecordRow.id))
                                .where(TuningRecordRow.job_id == job_id,
                                       TuningRecordRow.provenance != str(Provenance.CONFIRM))) or 0
        return trials, session.scalar(select(Job.tuning_seconds).where(Job.id == job_id)) or 0.0
    return store.read(work)


def record_job_tasks(store: Store, job_id: int, tasks: list[tuple[int, str, int, float]]) -> None:
    """A job's tasks as ``(workload id, name, weight, FLOPs)``, so history can estimate latency from
    the database alone; tasks already recorded are kept."""
    def work(session) -> None:
        known = set(session.scalars(select(JobTask.workload_id).where(JobTask.job_id == job_id)))
        for workload_id, name, weight, flops in tasks:
            if workload_id not in known:
                known.add(workload_id)
                session.add(JobTask(job_id=job_id, workload_id=workload_id, task_name=name,
                                    weight=weight, flops=flops))
    store.write(work)


def set_job(store: Store, job_id: int, **values) -> None:
    """Update columns of a job row."""
    def work(session) -> None:
        job = session.get(Job, job_id)
        for name, value in values.items():
            setattr(job, name, value)
    store.write(work)


def finish_job(store: Store, job_id: int, tuning_seconds: float) -> None:
    """Mark the job finished and release its lease."""
    set_job(store, job_id, status="finished", finished_at=utcnow(), tuning_seconds=tuning_seconds,
            lease_pid=None, lease_host=None)


def interrupt_job(store: Store, job_id: int) -> None:
    """Mark the job interrupted (a rerun of its command resumes it) and release its lease."""
    set_job(store, job_id, status="interrupted", lease_pid=None, lease_host=None)


def record_artifact(store: Store, so_path: Path, sha256: str, manifest: dict, record_ids: list[int]) -> int:
    """An artifact row and the records it was built from; its id."""
    def work(session) -> int:
        row = Artifact(path=str(so_path.resolve()), sha256=sha256, manifest=manifest)
        session.add(row)
        session.flush()
        session.add_all(ArtifactRecord(artifact_id=row.id, record_id=r) for r in record_ids)
        return row.id
    return store.write(work)
