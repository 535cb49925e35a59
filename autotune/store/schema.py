"""SQLAlchemy schema of the tuning database: the source of truth of every job and measurement.

This is the schema at the newest migration (``autotune/migrations/versions``); change both together.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


UNFINISHED = "status IN ('running', 'interrupted')"  # a job a rerun of its command resumes


def utcnow() -> dt.datetime:
    """Timezone-aware now, the timestamp of every row."""
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    """Declarative base of all tables."""


class Model(Base):
    """An ONNX model with the input shapes it was frozen to."""

    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    sha256: Mapped[str] = mapped_column(String(64))
    input_shapes: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    __table_args__ = (UniqueConstraint("sha256", "name", name="uq_model"),)


class TargetRow(Base):
    """A TVM target in canonical JSON form and the features of the host that defined it."""

    __tablename__ = "targets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    canonical: Mapped[str] = mapped_column(String(1024), unique=True)
    host_features: Mapped[str] = mapped_column(Text, default="")


class WorkloadRow(Base):
    """A tuning task's TIR, keyed by TVM's structural hash plus a platform-independent sha256."""

    __tablename__ = "workloads"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    structural_hash: Mapped[str] = mapped_column(String(32), index=True)
    content_sha256: Mapped[str] = mapped_column(String(64), index=True, unique=True)
    workload_json: Mapped[str] = mapped_column(Text)
    tir_text: Mapped[str] = mapped_column(Text)


class Job(Base):
    """One tuning job: a model on a target under a budget. Rerunning the same command resumes it."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    target_id: Mapped[int] = mapped_column(ForeignKey("targets.id"))
    resume_key: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default="running")
    budget_trials: Mapped[int | None] = mapped_column(Integer, nullable=True)
    budget_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    host: Mapped[str] = mapped_column(String(256), default="")
    versions: Mapped[dict] = mapped_column(JSON, default=dict)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    tuning_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    # The lease of a running job: who holds it and when they last said so (``store.jobs``).
    lease_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    lease_host: Mapped[str | None] = mapped_column(String(256), nullable=True)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    settings: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # how it measured (builders, repeats…)
    __table_args__ = (Index("uq_jobs_unfinished_command", "resume_key", unique=True,
                            sqlite_where=text(UNFINISHED), postgresql_where=text(UNFINISHED)),)


class JobTask(Base):
    """A task of a job's model: which workload, under which name, how often the model calls it."""

    __tablename__ = "job_tasks"
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    workload_id: Mapped[int] = mapped_column(ForeignKey("workloads.id"), primary_key=True)
    task_name: Mapped[str] = mapped_column(String(256))
    weight: Mapped[int] = mapped_column(Integer)
    flops: Mapped[float] = mapped_column(Float)


class TuningRecordRow(Base):
    """One measured candidate: its trace and run times, or why it failed."""

    __tablename__ = "tuning_records"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), nullable=True, index=True)
    workload_id: Mapped[int] = mapped_column(ForeignKey("workloads.id"))
    target_id: Mapped[int] = mapped_column(ForeignKey("targets.id"))
    job_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    record_json: Mapped[str] = mapped_column(Text)
    latency_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    error_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    error_msg: Mapped[str | None] = mapped_column(Text, nullable=True)
    provenance: Mapped[str] = mapped_column(String(64), default="search")
    # manual: name, file, sha256; heuristic: its schedule's hash; confirm: the contenders' timings
    source: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    measured_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    runner: Mapped[str | None] = mapped_column(String(256), nullable=True)  # local:HOST, rpc:KEY@HOST:PORT
    __table_args__ = (Index("ix_records_best", "workload_id", "target_id", "latency_s"),)


class Artifact(Base):
    """A compiled ``.so`` with its manifest."""

    __tablename__ = "artifacts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    manifest: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ArtifactRecord(Base):
    """Which tuning records an artifact was built from."""

    __tablename__ = "artifact_records"
    artifact_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id"), primary_key=True)
    record_id: Mapped[int] = mapped_column(ForeignKey("tuning_records.id"), primary_key=True)
