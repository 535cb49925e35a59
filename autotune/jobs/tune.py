"""``tune``: a tuning job, from the ONNX file to every task's records in the database.

A job is opened (or resumed: the same command has the same resume key), its hand schedules and the
fixed schedules nobody timed are measured, the search runs within the budget, and the job ends by
re-timing each task's finalists (``confirm``). Every measurement is committed as it is made.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import platform
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..backends import backend_for
from ..common.results import Result
from ..errors import AutotuneError
from ..frontend.tasks import Task
from ..measure.config import MeasureConfig
from ..search.budget import Budget
from ..search.driver import SearchConfig, SearchResult, search
from ..store import history
from ..store import jobs as job_rows
from ..store.engine import Store
from ..store.selection import Selection
from ..targets.host import host_cpu_flags
from ..targets.names import canonical
from .confirm import Confirmation, confirm_finalists
from .prepare import Prepared, prepare

ProgressFn = Callable[[dict], None]
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneOptions:
    """What to tune for and how long: the arguments of ``autotune.tune`` but the model."""

    shapes: dict[str, tuple[int, ...]] | None = None
    target: object = "host"  # a name, JSON or tag, or a tvm.target.Target
    db: str | None = None
    trials: int | None = None
    time_budget_s: float | None = None
    reuse: bool = True  # take tasks another job tuned on this target from the database
    config: SearchConfig = SearchConfig()
    fusion: str = "full"
    manual: Sequence[str | Path] = ()  # hand-schedule modules, measured before the search
    rpc: str | None = None  # HOST:PORT of an RPC tracker whose servers time the candidates
    rpc_key: str | None = None
    precision: str = "fp32"
    confirm: bool = True  # re-time each task's finalists at the end
    trust_runners: Sequence[str] | None = None  # reuse only records these runners timed
    measure: MeasureConfig = MeasureConfig()  # builders, timeouts, repeats (threads: the target's)
    tune_shapes: str | None = None  # a range job's shapes to tune, e.g. "1x32,8x128" (default: a spread)


@dataclass
class TuneSummary(Result):
    """What a tuning job did: its trials, time and failures, and what the model is estimated at."""

    job_id: int
    resumed: bool
    model: str
    target: dict
    precision: str
    tasks: int
    tasks_from_database: int
    trials_measured: int
    failures: int
    tuning_seconds: float
    time_split_s: dict[str, float]
    estimated_latency_ms: float | None
    untuned_tasks: list[str]
    unsearchable_tasks: dict[str, str]
    manual_schedules: list[dict] = field(default_factory=list)
    confirmed: dict[str, dict] = field(default_factory=dict)


def _versions() -> dict:
    import onnx
    import tvm
    import xgboost

    return {"tvm": tvm.__version__, "onnx": onnx.__version__, "xgboost": xgboost.__version__,
            "python": platform.python_version()}


def resume_key(prepared: Prepared, budget: Budget, settings: list) -> str:
    """The key that makes rerunning the same command resume its job."""
    key = json.dumps([prepared.model.sha256, canonical(prepared.target),
                      prepared.model.input_shapes(), budget.trials, budget.seconds, settings],
                     sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()


def _open(store: Store, prepared: Prepared, budget: Budget, settings: list, measure: MeasureConfig
          ) -> tuple[int, bool]:
    model = prepared.model
    model_id = job_rows.model_id(store, model.name, model.sha256, model.input_shapes())
    target_id = store.target_id(canonical(prepared.target), " ".join(sorted(host_cpu_flags())))
    return job_rows.open_job(store, resume_key(prepared, budget, settings), model_id, target_id,
                             budget.trials, budget.seconds, _versions(), job_rows.Holder.this_process(),
                             measure.settings())


class _Heartbeat:
    """Renews the job's lease every ``store.jobs.HEARTBEAT_S`` while the job runs, from a thread."""

    def __init__(self, store: Store, job_id: int):
        self.store, self.job_id = store, job_id
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"autotune-job-{job_id}-lease", daemon=True)

    def _beat(self) -> None:
        holder = job_rows.Holder.this_process()
        while not self.stop.wait(job_rows.HEARTBEAT_S):
            try:
                job_rows.renew_lease(self.store, self.job_id, holder)
            except AutotuneError as err:  # the job itself meets the fault, and stops on it
                logger.warning("cannot renew the lease of job %s: %s", self.job_id, err)

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def _satisfied_elsewhere(database, tasks: list[Task], job_id: int) -> set[str]:
    """Tasks whose chosen record (among trusted runners') comes from another job on this target."""
    return {t.name for t in tasks if (row := database.chosen_row(t.mod)) is not None and row.job_id != job_id}


@dataclass
class _Job:
    """A job opened for a prepared model: its rows, database and what it had spent before."""

    prepared: Prepared
    store: Store
    job_id: int
    resumed: bool
    database: object
    spent_trials: int
    spent_seconds: float
    satisfied: set[str]


def _start(prepared: Prepared, options: TuneOptions, budget: Budget, settings: list) -> _Job:
    from ..store.metaschedule import JobContext, SqlDatabase

    store = Store(options.db)
    job_id, resumed = _open(store, prepared, budget, settings, options.measure)
    spent_trials, spent_seconds = job_rows.job_spent(store, job_id)
    started = time.monotonic()
    runners = frozenset(options.trust_runners) if options.trust_runners is not None else None
    database = SqlDatabase(store, canonical(prepared.target),
                           JobContext(job_id, lambda: spent_seconds + time.monotonic() - started),
                           Selection(runners=runners))
    satisfied = _satisfied_elsewhere(database, prepared.tasks, job_id) if options.reuse else set()
    job_rows.record_job_tasks(store, job_id, [(database.workload_id(t.mod), t.name, t.weight, t.flops)
                                              for t in prepared.tasks])
    return _Job(prepared, store, job_id, resumed, database, spent_trials, spent_seconds, satisfied)


def _run(job: _Job, schedules: list, options: TuneOptions, budget: Budget, remote,
         progress: ProgressFn | None) -> tuple[SearchResult, list, list[Confirmation]]:
    """Hand schedules (unless resumed), the search, the confirmation, on one set of workers."""
    from ..measure.measurer import Measurer
    from ..search.fixed import measure_manual

    prepared = job.prepared

    def on_round(event: dict) -> None:
        job_rows.set_job(job.store, job.job_id, tuning_seconds=event["seconds"])
        if progress:
            progress(event)
    manual = []
    threads = int(prepared.target.attrs.get("num-cores", 0)) or None  # None: every core
    with Measurer(dataclasses.replace(options.measure, threads=threads), remote) as measurer:
        if schedules and not job.resumed:
            manual = measure_manual(prepared.tasks, schedules, job.database, measurer)
            _report_manual_failures(manual, progress)
        to_tune = [t for t in prepared.tasks if t.name not in job.satisfied]
        try:
            result = search(to_tune, job.database, measurer, budget, options.config, on_round,
                            already_measured=job.spent_trials + len(manual),
                            already_seconds=job.spent_seconds, fixed_for=prepared.tasks)
            started = time.monotonic()
            confirmed = confirm_finalists(prepared, job.database, measurer, progress) if options.confirm else []
        except Exception:  # what TVM rewrapped may be a fault of the database or the workers
            fault = job.store.last_fault or measurer.fault
            if fault is None:
                raise
            raise fault from None
        result.time_split["confirm"] = round(time.monotonic() - started, 2)
    return result, manual, confirmed


def _report_manual_failures(results: list, progress: ProgressFn | None) -> None:
    for result in results:
        if progress and result.error:
            print(f"manual schedule {result.schedule} on {result.task}: {result.error} (skipped)",
                  file=sys.stderr)


def tune(model: str | Path, options: TuneOptions = TuneOptions(), progress: ProgressFn | None = None
         ) -> TuneSummary:
    """Tune every task of an ONNX model; every measurement goes to the database (see ``TuneOptions``)."""
    check_budget(options)  # before the import, which takes a while on a large model
    prepared = prepare(model, options.shapes, options.target, options.fusion, options.precision,
                       for_tuning=True, tune_shapes=options.tune_shapes)
    return tune_prepared(model, prepared, options, progress)


def check_budget(options: TuneOptions) -> None:
    """One ``AutotuneError`` unless ``options`` give a trial or time budget."""
    if options.trials is None and options.time_budget_s is None:
        raise AutotuneError("give a budget: --trials N and/or --time-budget DURATION")


def tune_prepared(model: str | Path, prepared: Prepared, options: TuneOptions,
                  progress: ProgressFn | None = None) -> TuneSummary:
    """``tune`` of a model already prepared for tuning with ``options`` (``jobs.prepare``)."""
    from ..measure.rpc import rpc_target
    from ..schedules.manual import load_schedules

    check_budget(options)
    budget = Budget(trials=options.trials, seconds=options.time_budget_s)
    remote = rpc_target(options.rpc, options.rpc_key) if options.rpc or options.rpc_key else None
    schedules = [item for module in options.manual for item in load_schedules(module)]
    if remote is None:
        backend_for(prepared.target).check_runnable(prepared.target, "measure candidates")
    settings = [options.fusion, options.config.trials_per_round, sorted(s.source_sha256 for s in schedules)]
    if options.precision != "fp32":  # fp32 jobs keep their resume keys
        settings.append(options.precision)
    if options.measure != MeasureConfig():  # measured otherwise: another job (defaults keep their keys)
        settings.append(options.measure.settings())
    if options.tune_shapes:
        settings.append(options.tune_shapes)
    job = _start(prepared, options, budget, settings)
    try:
        with _Heartbeat(job.store, job.job_id):
            result, manual, confirmed = _run(job, schedules, options, budget, remote, progress)
    except BaseException:
        _mark_interrupted(job)
        raise
    job_rows.finish_job(job.store, job.job_id, result.tuning_seconds)
    return _summary(model, job, options, result, manual, confirmed)


def _mark_interrupted(job: _Job) -> None:
    """Mark a job that stopped early interrupted, releasing its lease; where the database itself
    failed, its lease goes stale instead and a rerun takes the job over."""
    try:
        job_rows.interrupt_job(job.store, job.job_id)
    except AutotuneError as err:
        logger.warning("job %s not marked interrupted: %s", job.job_id, err)


def _summary(model, job: _Job, options: TuneOptions, result: SearchResult, manual: list,
             confirmed: list[Confirmation]) -> TuneSummary:
    tasks = job.prepared.tasks
    # The estimate is where the job's curve ends (``history.estimate``): fastest trials, never a
    # confirmation's re-timing, and only records the job knew of (not another job's meanwhile).
    estimate_ms, unmeasured = history.estimate(job.store, job.job_id)
    return TuneSummary(
        job_id=job.job_id, resumed=job.resumed, model=str(model),
        target=json.loads(canonical(job.prepared.target)), precision=options.precision,
        tasks=len(tasks), tasks_from_database=len(job.satisfied),
        trials_measured=result.trials_measured, failures=result.failures,
        tuning_seconds=round(result.tuning_seconds, 2), time_split_s=result.time_split,
        estimated_latency_ms=estimate_ms,
        untuned_tasks=sorted(t.name for t in tasks if job.database.workload_id(t.mod) in unmeasured),
        unsearchable_tasks={p.task.name: p.search_error for p in result.tasks if p.search_error},
        manual_schedules=[m.as_dict() for m in manual],
        confirmed={c.task: {"provenance": c.provenance, "retimed_ms": c.winner_retimed_ms()}
                   for c in confirmed})
