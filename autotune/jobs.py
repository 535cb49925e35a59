"""Tuning jobs: the rows that make a job resumable, and the tune/compile entry points."""

from __future__ import annotations

import hashlib
import json
import platform
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from .confirm import confirm_finalists
from .database import CONFIRM, Store, make_sql_database
from .errors import AutotuneError
from .frontend import ImportedModel, load_model
from .schema import Artifact, ArtifactRecord, Job, JobTask, Model, TuningRecordRow, utcnow
from .search import Budget, SearchConfig, search
from .targets import canonical, host_cpu_flags, parse_target
from .tasks import Task, extract_tasks, fuse


@dataclass
class Prepared:
    """A model imported, fused and split into tasks for one target."""

    model: ImportedModel
    target: object
    fused: object
    tasks: list[Task]


def prepare(model_path: str | Path, shapes: dict[str, tuple[int, ...]] | None, target: str,
            fusion: str = "full", precision: str = "fp32") -> Prepared:
    """Import ``model_path`` with frozen ``shapes``, apply graph passes, extract tasks."""
    tvm_target = parse_target(target) if isinstance(target, str) else target
    model = load_model(model_path, shapes)
    fused = fuse(model.relax_mod, tvm_target, fusion, precision)
    return Prepared(model, tvm_target, fused, extract_tasks(fused, tvm_target))


def _versions() -> dict:
    import onnx
    import tvm
    import xgboost

    return {"tvm": tvm.__version__, "onnx": onnx.__version__, "xgboost": xgboost.__version__,
            "python": platform.python_version()}


def _model_id(store: Store, model: ImportedModel) -> int:
    def work(session) -> int:
        row = session.scalars(select(Model).where(Model.sha256 == model.sha256,
                                                  Model.name == model.name)).first()
        if row is None:
            row = Model(name=model.name, sha256=model.sha256, input_shapes=model.input_shapes())
            session.add(row)
            session.flush()
        return row.id
    return store.get_or_create(work)


def _resume_key(prepared: Prepared, budget: Budget, settings: list) -> str:
    key = json.dumps([prepared.model.sha256, canonical(prepared.target),
                      prepared.model.input_shapes(), budget.trials, budget.seconds, settings],
                     sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()


def open_job(store: Store, prepared: Prepared, budget: Budget, settings: list) -> tuple[int, bool]:
    """The unfinished job of the same command (resumed), or a new one; returns (id, resumed)."""
    key = _resume_key(prepared, budget, settings)
    target_id = store.target_id(canonical(prepared.target), " ".join(sorted(host_cpu_flags())))
    model_id = _model_id(store, prepared.model)

    def work(session) -> tuple[int, bool]:
        job = session.scalars(select(Job).where(Job.resume_key == key, Job.status != "finished")
                              .order_by(Job.id.desc())).first()
        if job is not None:
            job.status = "running"
            return job.id, True
        job = Job(model_id=model_id, target_id=target_id, resume_key=key, status="running",
                  budget_trials=budget.trials, budget_seconds=budget.seconds,
                  host=socket.gethostname(), versions=_versions())
        session.add(job)
        session.flush()
        return job.id, False
    return store.write(work)


def _job_spent(store: Store, job_id: int) -> tuple[int, float]:
    with store.session() as session:
        trials = session.scalar(select(func.count(TuningRecordRow.id))
                                .where(TuningRecordRow.job_id == job_id,
                                       TuningRecordRow.provenance != CONFIRM)) or 0
        seconds = session.scalar(select(Job.tuning_seconds).where(Job.id == job_id)) or 0.0
    return trials, seconds


def _satisfied_elsewhere(database, tasks: list[Task], job_id: int) -> set[str]:
    """Tasks that already have a successful record from another job on this target."""
    return {t.name for t in tasks
            if any(row.job_id != job_id for row in database.best_rows(t.mod, 1))}


def _record_job_tasks(store: Store, database, job_id: int, tasks: list[Task]) -> None:
    """The job's task list with weights, so history can estimate latency from the database alone."""
    ids = {t.name: database.workload_id(t.mod) for t in tasks}

    def work(session) -> None:
        known = set(session.scalars(select(JobTask.workload_id).where(JobTask.job_id == job_id)))
        for task in tasks:
            if ids[task.name] not in known:
                known.add(ids[task.name])
                session.add(JobTask(job_id=job_id, workload_id=ids[task.name], task_name=task.name,
                                    weight=task.weight, flops=task.flops))
    store.write(work)


def _set_job(store: Store, job_id: int, **values) -> None:
    def work(session) -> None:
        job = session.get(Job, job_id)
        for name, value in values.items():
            setattr(job, name, value)
    store.write(work)


def tune(model: str | Path, shapes: dict[str, tuple[int, ...]] | None = None, target: str = "host",
         db: str | None = None, trials: int | None = None, time_budget_s: float | None = None,
         reuse: bool = True, config: SearchConfig = SearchConfig(), fusion: str = "full",
         manual: Sequence[str | Path] = (), progress: Callable[[dict], None] | None = None,
         rpc: str | None = None, rpc_key: str | None = None, precision: str = "fp32",
         confirm: bool = True) -> dict:
    """Tune every task of an ONNX model; every measurement goes to the database. Returns a summary.

    Unless ``confirm`` is false, the job ends by re-timing each task's finalists side by side
    (``autotune.confirm``); the summary's ``confirmed`` names each winner's provenance and timing.

    ``manual`` names hand-schedule modules (see ``autotune.manual``), measured before the search.
    With ``rpc`` ("HOST:PORT" of a tracker) candidates are timed on the servers under ``rpc_key``.
    """
    from .manual import load_schedules
    from .measure import MeasureConfig, Measurer
    from .rpc import rpc_target
    from .targets import check_runnable_here

    if trials is None and time_budget_s is None:
        raise AutotuneError("give a budget: --trials N and/or --time-budget DURATION")
    budget = Budget(trials=trials, seconds=time_budget_s)
    remote = rpc_target(rpc, rpc_key) if rpc or rpc_key else None
    schedules = [item for module in manual for item in load_schedules(module)]
    prepared = prepare(model, shapes, target, fusion, precision)
    if remote is None:
        check_runnable_here(prepared.target, "measure candidates")
    store = Store(db)
    settings = [fusion, config.trials_per_round, sorted(s.source_sha256 for s in schedules)]
    if precision != "fp32":  # fp32 jobs keep their resume keys
        settings.append(precision)
    job_id, resumed = open_job(store, prepared, budget, settings)
    database = make_sql_database(store, canonical(prepared.target), job_id=job_id)
    satisfied = _satisfied_elsewhere(database, prepared.tasks, job_id) if reuse else set()
    to_tune = [t for t in prepared.tasks if t.name not in satisfied]
    spent_trials, spent_seconds = _job_spent(store, job_id)
    _record_job_tasks(store, database, job_id, prepared.tasks)
    session_start = time.monotonic()
    database.job_clock = lambda: spent_seconds + time.monotonic() - session_start

    def on_round(event: dict) -> None:
        _set_job(store, job_id, tuning_seconds=event["seconds"])
        if progress:
            progress(event)
    manual_rows: list[dict] = []
    try:
        threads = int(prepared.target.attrs.get("num-cores", 0)) or None
        with Measurer(MeasureConfig(threads=threads), remote) as measurer:
            if schedules and not resumed:
                manual_rows = _measure_manual(prepared.tasks, schedules, database, measurer, progress)
                spent_trials += sum(1 for row in manual_rows if "schedule" in row)
            result = search(to_tune, database, measurer, budget, config, on_round,
                            already_measured=spent_trials, already_seconds=spent_seconds,
                            fixed_for=prepared.tasks)
            confirm_started = time.monotonic()
            confirmed = confirm_finalists(prepared, database, measurer, progress) if confirm else []
            result.time_split["confirm"] = round(time.monotonic() - confirm_started, 2)
    except BaseException:
        _set_job(store, job_id, status="interrupted")
        raise
    _set_job(store, job_id, status="finished", finished_at=utcnow(),
             tuning_seconds=result.tuning_seconds)
    best = {t.name: (rows[0].latency_s if (rows := database.best_rows(t.mod, 1)) else None)
            for t in prepared.tasks}
    known = all(v is not None for v in best.values())
    return {"job_id": job_id, "resumed": resumed, "model": str(model),
            "target": json.loads(canonical(prepared.target)), "precision": precision,
            "tasks": len(prepared.tasks),
            "tasks_from_database": len(satisfied), "trials_measured": result.trials_measured,
            "failures": result.failures, "tuning_seconds": round(result.tuning_seconds, 2),
            "time_split_s": result.time_split,
            "estimated_latency_ms": (1e3 * sum(best[t.name] * t.weight for t in prepared.tasks)
                                     if known else None),
            "untuned_tasks": sorted(name for name, v in best.items() if v is None),
            "unsearchable_tasks": {p.task.name: p.search_error for p in result.tasks if p.search_error},
            "manual_schedules": manual_rows,
            "confirmed": {c["task"]: {"provenance": c["provenance"],
                                      "retimed_ms": _retimed_ms(c)} for c in confirmed}}


def _retimed_ms(confirmation: dict) -> float | None:
    """The winner's re-timed latency in ms."""
    winner = next(c for c in confirmation["contenders"] if c["record_id"] == confirmation["record_id"])
    return None if winner["retimed_s"] is None else round(winner["retimed_s"] * 1e3, 4)


def _measure_manual(tasks: list[Task], schedules, database, measurer,
                    progress: Callable[[dict], None] | None) -> list[dict]:
    from .manual import measure_manual

    rows = measure_manual(tasks, schedules, database, measurer)
    for row in rows:
        if progress and row["error"]:
            print(f"manual schedule {row['schedule']} on {row['task']}: {row['error']} (skipped)",
                  file=sys.stderr)
    return rows


def compile(model: str | Path, output: str | Path, shapes: dict[str, tuple[int, ...]] | None = None,
            target: str = "host", db: str | None = None, validate: bool = True,
            rtol: float = 1e-4, atol: float = 1e-4, fusion: str = "full",
            pins: Sequence[str] = (), precision: str = "fp32", max_rel_err: float | None = None,
            min_cosine: float | None = None, inputs: str | Path | None = None) -> dict:
    """Build the model with the database's best schedules, validate it, and only then put it at
    ``output`` (+ manifest); a failed validation leaves what was at ``output`` untouched.

    ``pins`` names manual schedules to use wherever they have a record, even when slower.
    ``precision`` fp16/bf16 is checked against the fp32 ONNX Runtime reference by max relative
    error and cosine similarity (``max_rel_err``/``min_cosine``, defaults per precision) instead
    of ``rtol``/``atol``; either tolerance given applies in any precision. ``inputs`` names an
    ``.npz`` of validation inputs (default: inputs the model accepts, ``frontend.random_inputs``).
    """
    from . import artifact
    from .frontend import inputs_from_file
    from .precision import DEFAULT_TOLERANCES
    from .targets import check_runnable_here, physical_cores

    prepared = prepare(model, shapes, target, fusion, precision)
    given = inputs_from_file(inputs, prepared.model.inputs) if inputs is not None else None
    store = Store(db)
    database = make_sql_database(store, canonical(prepared.target))
    database.pins = set(pins)
    used = [row for t in prepared.tasks if (row := database.chosen_row(t.mod)) is not None]
    executable = artifact.build_tuned(prepared.fused, prepared.target, database)
    so_path = Path(output)
    extra = {"record_ids": sorted(r.id for r in used), "fusion": fusion, "precision": precision,
             "provenance": sorted({r.provenance for r in used}),
             "job_ids": sorted({r.job_id for r in used if r.job_id is not None}),
             "tasks": len(prepared.tasks), "tasks_tuned": len(used)}
    staged = artifact.stage(executable, so_path, prepared.model, prepared.target, extra)
    try:
        result = None
        if validate:
            check_runnable_here(prepared.target, "validate the artifact")
            default_rel, default_cos = DEFAULT_TOLERANCES.get(precision, (None, None))
            result = artifact.validate(staged.so_path, prepared.model, physical_cores(), rtol, atol,
                                       max_rel_err if max_rel_err is not None else default_rel,
                                       min_cosine if min_cosine is not None else default_cos, given)
            staged.record_validation(result)
            if not result.passed:
                _reject(staged, result, precision)
        staged.commit()
    finally:
        staged.discard()  # nothing left of a staged pair that was neither committed nor kept
    artifact_id = _record_artifact(store, so_path, staged.manifest, extra["record_ids"])
    return {"artifact": str(so_path), "manifest": str(so_path) + ".json", "artifact_id": artifact_id,
            "sha256": staged.manifest["sha256"], **extra,
            "validation": result.as_dict() if result else None}


def _reject(staged, result, precision: str) -> None:
    """Keep a build that failed validation aside and raise, naming both paths."""
    from .errors import ValidationFailed

    kept = staged.reject()
    previous = ("the artifact already there is untouched" if staged.target.exists()
                else "nothing was written there")
    raise ValidationFailed(f"{staged.target} ({precision}) does not match ONNX Runtime fp32: "
                           f"max abs error {result.max_abs_err:.3g}, max rel error "
                           f"{result.max_rel_err:.3g}, min cosine {result.min_cosine:.6f} "
                           f"({result.tolerance()}); {previous}; the rejected build is kept at {kept}")


def _record_artifact(store: Store, so_path: Path, manifest: dict, record_ids: list[int]) -> int:
    def work(session) -> int:
        row = Artifact(path=str(so_path.resolve()), sha256=manifest["sha256"], manifest=manifest)
        session.add(row)
        session.flush()
        session.add_all(ArtifactRecord(artifact_id=row.id, record_id=r) for r in record_ids)
        return row.id
    return store.write(work)
