"""Tuning-history queries over the SQL store. Every filter is a bound parameter."""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import func, select

from ..common.records import Provenance, estimated_latency_ms
from ..errors import AutotuneError
from .engine import Store
from .schema import Artifact, ArtifactRecord, Job, JobTask, Model, TargetRow, TuningRecordRow
from .selection import RecordSummary, Selection


def _target_label(canonical: str) -> str:
    target = json.loads(canonical)
    return target.get("mcpu") or target.get("arch") or target.get("kind", "?")


def _job_filters(model: str | None, target: str | None, since: dt.datetime | None,
                 job: int | None = None) -> list:
    filters = []
    if model:
        filters.append(Model.name == model)
    if target:
        filters.append(TargetRow.canonical.contains(target))
    if since:
        filters.append(Job.started_at >= since)
    if job is not None:
        filters.append(Job.id == job)
    return filters


def jobs(store: Store, model: str | None = None, target: str | None = None,
         since: dt.datetime | None = None) -> list[dict]:
    """The jobs run, newest first, with trial and failure counts."""
    counts = (select(TuningRecordRow.job_id, func.count(TuningRecordRow.id).label("trials"),
                     func.count(TuningRecordRow.error_kind).label("failures"))
              .where(TuningRecordRow.provenance != str(Provenance.CONFIRM))
              .group_by(TuningRecordRow.job_id).subquery())
    query = (select(Job, Model.name, TargetRow.canonical, counts.c.trials, counts.c.failures)
             .join(Model, Model.id == Job.model_id).join(TargetRow, TargetRow.id == Job.target_id)
             .outerjoin(counts, counts.c.job_id == Job.id)
             .where(*_job_filters(model, target, since)).order_by(Job.id.desc()))
    with store.session() as session:
        rows = session.execute(query).all()
    return [{"job_id": j.id, "model": name, "target": _target_label(canonical), "status": j.status,
             "trials": trials or 0, "failures": failures or 0,
             "tuning_seconds": round(j.tuning_seconds, 1), "budget_trials": j.budget_trials,
             "budget_seconds": j.budget_seconds, "started_at": j.started_at.isoformat(),
             "finished_at": j.finished_at.isoformat() if j.finished_at else None, "host": j.host}
            for j, name, canonical, trials, failures in rows]


def chosen_records(store: Store, scope: list[tuple[int, int]]) -> dict[tuple[int, int], tuple]:
    """Per (workload id, target id) of ``scope``, the record compile uses (``Selection``, no pins)
    and the count of successful records: ``(RecordSummary, count)``."""
    by_target: dict[int, list[int]] = {}
    for workload_id, target_id in scope:
        by_target.setdefault(target_id, []).append(workload_id)
    chosen: dict[tuple[int, int], tuple[RecordSummary, int]] = {}
    for target_id, workload_ids in by_target.items():
        for workload_id, records in store.record_summaries(workload_ids, target_id).items():
            pick = Selection().choose(workload_id, records)
            if pick is not None:
                chosen[(workload_id, target_id)] = (pick, len(records))
    return chosen


def best(store: Store, model: str | None = None, target: str | None = None,
         job: int | None = None) -> list[dict]:
    """The record compile uses for every workload (per target) the selected jobs tuned
    (``Selection``: its newest confirmation's winner, else its fastest record)."""
    scope = (select(JobTask.workload_id, Job.target_id, func.min(JobTask.task_name), TargetRow.canonical)
             .join(Job, Job.id == JobTask.job_id).join(Model, Model.id == Job.model_id)
             .join(TargetRow, TargetRow.id == Job.target_id)
             .where(*_job_filters(model, target, None, job))
             .group_by(JobTask.workload_id, Job.target_id, TargetRow.canonical))
    with store.session() as session:
        tasks = session.execute(scope).all()
    chosen = chosen_records(store, [(w, t) for w, t, _, _ in tasks])
    rows = []
    for workload_id, target_id, task, canonical in tasks:
        if (workload_id, target_id) not in chosen:
            continue
        pick, measured = chosen[(workload_id, target_id)]
        rows.append({"task": task, "workload_id": workload_id, "target": _target_label(canonical),
                     "latency_ms": pick.latency_s * 1e3, "provenance": pick.provenance,
                     "origin": pick.origin or pick.manual_name or "", "record_id": pick.id,
                     "job_id": pick.job_id, "records_measured": measured,
                     "measured_at": pick.measured_at.isoformat()})
    return sorted(rows, key=lambda r: -r["latency_ms"])


def _job_tasks(session, job_id: int) -> dict[int, int]:
    return dict(session.execute(select(JobTask.workload_id, JobTask.weight)
                                .where(JobTask.job_id == job_id)).all())


def _trials(store: Store, job_id: int) -> tuple[dict[int, int], dict[int, float], list[tuple]]:
    """A job's tasks (workload id → weight), each one's fastest trial from before the job, and the
    job's trials in order as ``(workload id, latency or None, job seconds)``.

    A trial is any record but a confirmation: a ``confirm`` record re-times a finalist (in place,
    inside the model, or alone, at another moment), and its latency is no measurement of the search.
    """
    trial = TuningRecordRow.provenance != str(Provenance.CONFIRM)
    with store.session() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise AutotuneError(f"no job {job_id} in --db {store.url}")
        weights = _job_tasks(session, job_id)
        first = session.scalar(select(func.min(TuningRecordRow.id)).where(TuningRecordRow.job_id == job_id))
        if first is None:  # measured nothing itself: everything known so far came before it
            first = (session.scalar(select(func.max(TuningRecordRow.id))) or 0) + 1
        prior = session.execute(
            select(TuningRecordRow.workload_id, func.min(TuningRecordRow.latency_s))
            .where(TuningRecordRow.workload_id.in_(list(weights)), TuningRecordRow.target_id == job.target_id,
                   TuningRecordRow.id < first, TuningRecordRow.latency_s.is_not(None), trial)
            .group_by(TuningRecordRow.workload_id)).all()
        records = session.execute(
            select(TuningRecordRow.workload_id, TuningRecordRow.latency_s, TuningRecordRow.job_seconds)
            .where(TuningRecordRow.job_id == job_id, trial).order_by(TuningRecordRow.id)).all()
    return weights, dict(prior), records


def _replay(weights: dict[int, int], prior: dict[int, float], records: list[tuple]
            ) -> tuple[list[dict], dict[int, float]]:
    """The curve's points from ``_trials``, and each workload's fastest trial where it ends."""
    best_s = dict(prior)

    def estimate() -> float | None:
        return estimated_latency_ms((n, best_s.get(w)) for w, n in weights.items())
    points = [{"trial": 0, "seconds": 0.0, "estimated_latency_ms": estimate()}]
    for trial, (workload_id, latency_s, seconds) in enumerate(records, start=1):
        if latency_s is not None and latency_s < best_s.get(workload_id, float("inf")):
            best_s[workload_id] = latency_s
        points.append({"trial": trial, "seconds": seconds, "estimated_latency_ms": estimate()})
    return points, best_s


def curve(store: Store, job_id: int) -> list[dict]:
    """The job's estimated model latency (Σ weight × fastest trial so far) before (trial 0) and
    after each trial; where it ends is the job's ``estimate``.

    Tasks reused from other jobs start at their fastest trial from before the job; the estimate is
    None until every task has a measurement. Confirmations are not trials (``_trials``).
    """
    points, _ = _replay(*_trials(store, job_id))
    return points


def estimate(store: Store, job_id: int) -> tuple[float | None, set[int]]:
    """The job's estimated model latency, where its ``curve`` ends (the ``tune`` summary's), and
    the workloads of its tasks that no trial has measured (while any is left, the estimate is None)."""
    weights, prior, records = _trials(store, job_id)
    points, best_s = _replay(weights, prior, records)
    return points[-1]["estimated_latency_ms"], set(weights) - set(best_s)


def compare(store: Store, model: str) -> list[dict]:
    """One model's final estimated latency in each of its jobs, across targets."""
    rows = jobs(store, model=model)
    if not rows:
        raise AutotuneError(f"no jobs for model {model!r} in --db {store.url}")
    for row in rows:
        row["estimated_latency_ms"], _ = estimate(store, row["job_id"])
    return rows


def artifacts(store: Store, model: str | None = None, artifact: int | None = None) -> list[dict]:
    """Compiled artifacts and the tuning records each was built from."""
    query = select(Artifact).order_by(Artifact.id.desc())
    if artifact is not None:
        query = query.where(Artifact.id == artifact)
    with store.session() as session:
        rows = list(session.scalars(query))
        links = session.execute(select(ArtifactRecord.artifact_id, ArtifactRecord.record_id)
                                .where(ArtifactRecord.artifact_id.in_([a.id for a in rows]))).all()
    records: dict[int, list[int]] = {}
    for artifact_id, record_id in links:
        records.setdefault(artifact_id, []).append(record_id)
    return [{"artifact_id": a.id, "path": a.path, "sha256": a.sha256,
             "model": a.manifest.get("model", {}).get("name"), "target": a.manifest.get("mcpu"),
             "job_ids": a.manifest.get("job_ids", []), "record_ids": sorted(records.get(a.id, [])),
             "created_at": a.created_at.isoformat()}
            for a in rows if model is None or a.manifest.get("model", {}).get("name") == model]


def breakdown(store: Store, job_id: int) -> list[dict]:
    """Where the time goes: each task's weighted latency untuned (naive nest) and tuned (the record
    compile uses)."""
    with store.session() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise AutotuneError(f"no job {job_id} in --db {store.url}")
        tasks = session.execute(select(JobTask.workload_id, JobTask.task_name, JobTask.weight)
                                .where(JobTask.job_id == job_id)).all()
        ids = [t[0] for t in tasks]
        untuned = dict(session.execute(
            select(TuningRecordRow.workload_id, func.min(TuningRecordRow.latency_s))
            .where(TuningRecordRow.workload_id.in_(ids), TuningRecordRow.target_id == job.target_id,
                   TuningRecordRow.provenance == str(Provenance.DEFAULT),
                   TuningRecordRow.latency_s.is_not(None))
            .group_by(TuningRecordRow.workload_id)).all())
    chosen = chosen_records(store, [(w, job.target_id) for w in ids])
    tuned = {w: (pick.latency_s, pick.provenance) for (w, _), (pick, _) in chosen.items()}
    rows = []
    for workload_id, name, weight in tasks:
        naive = untuned.get(workload_id)
        latency, provenance = tuned.get(workload_id, (None, None))
        rows.append({"task": name, "weight": weight,
                     "untuned_ms": None if naive is None else naive * weight * 1e3,
                     "tuned_ms": None if latency is None else latency * weight * 1e3,
                     "best_provenance": provenance})
    return sorted(rows, key=lambda r: -(r["tuned_ms"] or 0))
