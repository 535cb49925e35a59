"""The rows of tuning jobs: a job opened or resumed, what it spent, its tasks, its artifacts."""

from __future__ import annotations

import socket
from pathlib import Path

from sqlalchemy import func, select

from ..common.records import Provenance
from .engine import Store
from .schema import Artifact, ArtifactRecord, Job, JobTask, Model, TuningRecordRow, utcnow


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


def open_job(store: Store, resume_key: str, model: int, target: int, budget_trials: int | None,
             budget_seconds: float | None, versions: dict) -> tuple[int, bool]:
    """The unfinished job with ``resume_key`` (resumed), or a new one; returns (id, resumed)."""
    def work(session) -> tuple[int, bool]:
        job = session.scalars(select(Job).where(Job.resume_key == resume_key, Job.status != "finished")
                              .order_by(Job.id.desc())).first()
        if job is not None:
            job.status = "running"
            return job.id, True
        job = Job(model_id=model, target_id=target, resume_key=resume_key, status="running",
                  budget_trials=budget_trials, budget_seconds=budget_seconds,
                  host=socket.gethostname(), versions=versions)
        session.add(job)
        session.flush()
        return job.id, False
    return store.write(work)


def job_spent(store: Store, job_id: int) -> tuple[int, float]:
    """Trials (confirmations excluded) and tuning seconds a job has spent so far."""
    with store.session() as session:
        trials = session.scalar(select(func.count(TuningRecordRow.id))
                                .where(TuningRecordRow.job_id == job_id,
                                       TuningRecordRow.provenance != str(Provenance.CONFIRM))) or 0
        seconds = session.scalar(select(Job.tuning_seconds).where(Job.id == job_id)) or 0.0
    return trials, seconds


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
    set_job(store, job_id, status="finished", finished_at=utcnow(), tuning_seconds=tuning_seconds)


def record_artifact(store: Store, so_path: Path, sha256: str, manifest: dict, record_ids: list[int]) -> int:
    """An artifact row and the records it was built from; its id."""
    def work(session) -> int:
        row = Artifact(path=str(so_path.resolve()), sha256=sha256, manifest=manifest)
        session.add(row)
        session.flush()
        session.add_all(ArtifactRecord(artifact_id=row.id, record_id=r) for r in record_ids)
        return row.id
    return store.write(work)
