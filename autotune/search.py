"""The MetaSchedule driver: rounds of evolutionary search, a task scheduler, and a budget.

Stock ``tune_relax`` has no time budget and cannot stop a task from a callback without crashing its
scheduler, so this driver runs the search in *rounds*: each round is one stock ``tune_tasks`` call on
one task for ``trials_per_round`` trials, sharing one database and one XGBoost cost model with every
other round. Between rounds the scheduler picks the next task (every task once first, heaviest first;
then by gradient-style expected gain) and checks the trial and time budget, so a time budget is
honoured to within one round.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import linecache
import logging
import statistics
import sys
import tempfile
import types
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .targets import target_cores
from .tasks import Task

logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    """Stop after ``trials`` measured trials or ``seconds`` of tuning, whichever comes first."""

    trials: int | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class SearchConfig:
    """Evolutionary search settings sized for small budgets on a 2-core machine."""

    population_size: int = 32
    init_min_unmeasured: int = 8
    genetic_num_iters: int = 2
    trials_per_round: int | None = None  # None: derived from the budget
    seed: int = 0


@dataclass
class TaskProgress:
    """What the search knows about one task."""

    task: Task
    trials: int = 0
    rounds: int = 0
    best_s: float | None = None
    history: list[float] = field(default_factory=list)
    search_error: str | None = None  # MetaSchedule could not search this task (it keeps its defaults)

    def weighted_s(self) -> float:
        return (self.best_s or 0.0) * self.task.weight


@dataclass
class SearchResult:
    """Totals of a search."""

    trials_measured: int
    failures: int
    tuning_seconds: float
    tasks: list[TaskProgress]
    time_split: dict[str, float] = field(default_factory=dict)

    def estimated_latency_ms(self) -> float | None:
        """Sum of weight × best latency over tasks, or None if a task has no measurement."""
        if any(p.best_s is None for p in self.tasks):
            return None
        return 1e3 * sum(p.weighted_s() for p in self.tasks)


ProgressFn = Callable[[dict], None]


def trials_per_round(budget: Budget, n_tasks: int, config: SearchConfig) -> int:
    """Round size: small enough that every task gets about two rounds of a trial budget."""
    if config.trials_per_round:
        return config.trials_per_round
    if budget.trials:
        return max(2, min(32, budget.trials // max(1, 2 * n_tasks)))
    return 16


def _pick_next(progress: list[TaskProgress]) -> TaskProgress | None:
    """First every untried task, heaviest first; then the task with the largest expected gain.

    Expected gain follows Ansor's gradient scheduler in spirit: a task's weighted latency times its
    recent relative improvement, with a floor that decays with the rounds already spent on it.
    Tasks MetaSchedule failed to search are skipped; None when no task is left.
    """
    progress = [p for p in progress if p.search_error is None]
    if not progress:
        return None
    untried = [p for p in progress if p.rounds == 0]
    if untried:
        return untried[0]

    def gain(p: TaskProgress) -> float:
        recent = p.history[-3:]
        improvement = (recent[0] - recent[-1]) / recent[0] if len(recent) > 1 and recent[0] else 0.0
        return p.weighted_s() * max(improvement, 1.0 / (1 + p.rounds))
    return max(progress, key=gain)


def _search_postprocs(target):
    """MetaSchedule's postprocessors for the target, less ``RewriteLayout`` on CPU.

    In TVM 0.27 ``RewriteLayout`` fails every candidate of a task with layout-free weights
    (``parallel_for_dynamic error ... args.size() == initial_indices_orig.size()``), which made all
    of MiniLM's matmuls unsearchable. Searched schedules read the weights as they are; the
    heuristic ones still pre-pack them (``heuristics``), and compile keeps the faster record.
    """
    from tvm.s_tir import meta_schedule as ms

    postprocs = ms.postproc.Postproc.create(target.kind.name)
    if target.kind.name != "llvm":
        return postprocs
    return [p for p in postprocs if not isinstance(p, ms.postproc.RewriteLayout)]


def register_tensor_intrinsics(target) -> None:
    """Register the tensor intrinsics a target's schedule rules need, and no more.

    ``TuneContext`` imports ``tvm.s_tir.tensor_intrin``, whose CUDA half costs ~30 s on these machines;
    for CPU targets only the x86 intrinsics (0.3 s) are registered, for CUDA targets only the CUDA
    ones (tensor-core rules need them), under the same package name.
    """
    name = "tvm.s_tir.tensor_intrin"
    kinds = {"llvm": "x86", "cuda": "cuda"}
    if target.kind.name not in kinds:
        importlib.import_module(name)
        return
    if name not in sys.modules:  # an empty package: its submodules import one by one, on demand
        spec = importlib.util.find_spec(name)
        package = types.ModuleType(name)
        package.__path__ = list(spec.submodule_search_locations)
        package.__package__ = name
        package.__spec__ = spec
        sys.modules[name] = package
    if f"{name}.{kinds[target.kind.name]}" in sys.modules:
        return
    with _cheap_inspect_stack():
        importlib.import_module(f"{name}.{kinds[target.kind.name]}")


@contextlib.contextmanager
def _cheap_inspect_stack():
    """``inspect.stack`` without its per-frame ``getmodule`` scan, while intrinsics are parsed.

    Every ``@T.prim_func`` calls ``inspect.stack()``, which looks each frame's module up through
    all of ``sys.modules``: 95% of the CUDA intrinsics' import (~90 s → ~4 s here). Same frames,
    same one line of context (read through ``linecache`` as ``inspect`` does).
    """
    def stack(context: int = 1):
        frames, frame = [], sys._getframe(1)
        while frame is not None:
            code = frame.f_code
            line = linecache.getline(code.co_filename, frame.f_lineno) if context else ""
            frames.append(inspect.FrameInfo(frame, code.co_filename, frame.f_lineno, code.co_name,
                                            [line] if line else None, 0 if line else None))
            frame = frame.f_back
        return frames

    original, inspect.stack = inspect.stack, stack
    try:
        yield
    finally:
        inspect.stack = original


class _Search:
    def __init__(self, tasks: list[Task], database, measurer, config: SearchConfig, per_round: int):
        from tvm.s_tir import meta_schedule as ms

        if tasks:
            register_tensor_intrinsics(tasks[0].target)
        self.ms = ms
        self.database = database
        self.measurer = measurer
        self.progress = [TaskProgress(t) for t in tasks]
        self.contexts = [self._context(t, i, config) for i, t in enumerate(tasks)]
        self.cost_model = ms.cost_model.CostModel.create("xgb", num_tuning_cores=_cores(tasks))
        self.failures = 0
        self._load_state(per_round)

    def _context(self, task: Task, index: int, config: SearchConfig):
        strategy = self.ms.search_strategy.EvolutionarySearch(
            population_size=config.population_size, init_min_unmeasured=config.init_min_unmeasured,
            genetic_num_iters=config.genetic_num_iters)
        space = self.ms.space_generator.PostOrderApply(postprocs=_search_postprocs(task.target))
        return self.ms.TuneContext(mod=task.mod, target=task.target, space_generator=space,
                                   search_strategy=strategy, task_name=task.name,
                                   rand_state=config.seed + index, num_threads=target_cores(task.target))

    def _load_state(self, per_round: int) -> None:
        """Best latencies from the database; trials and rounds a resumed job already spent."""
        for p in self.progress:
            rows = self.database.best_rows(p.task.mod, 1)
            p.best_s = rows[0].latency_s if rows else None
            p.trials = self.database.job_trials(p.task.mod)
            p.rounds = -(-p.trials // per_round)

    def run_round(self, p: TaskProgress, trials: int) -> None:
        index = self.progress.index(p)
        recorder = make_recorder(self.database, self._on_measured(p))
        with tempfile.TemporaryDirectory(prefix="autotune-ms-") as work_dir:
            try:
                self._tune_tasks(index, p, trials, recorder, work_dir)
            except Exception as err:  # noqa: BLE001 - a TVM bug in one task's design space
                p.search_error = str(err).strip().splitlines()[0][:300]
                logger.warning("task %s cannot be searched, it keeps its default schedules: %s",
                               p.task.name, p.search_error)
        p.rounds += 1
        if p.best_s is not None:
            p.history.append(p.best_s)

    def _tune_tasks(self, index: int, p: TaskProgress, trials: int, recorder, work_dir: str) -> None:
        self.ms.tune.tune_tasks(
            tasks=[self.contexts[index]], task_weights=[float(p.task.weight)], work_dir=work_dir,
            max_trials_global=trials, max_trials_per_task=trials, num_trials_per_iter=trials,
            builder=self.measurer.builder, runner=self.measurer.runner, database=self.database,
            cost_model=self.cost_model, task_scheduler="round-robin",
            measure_callbacks=[recorder, self.ms.measure_callback.RemoveBuildArtifact(),
                               self.ms.measure_callback.UpdateCostModel()])

    def _on_measured(self, p: TaskProgress) -> Callable[[float | None], None]:
        def update(latency_s: float | None) -> None:
            p.trials += 1
            if latency_s is None:
                self.failures += 1
            elif p.best_s is None or latency_s < p.best_s:
                p.best_s = latency_s
        return update


def _cores(tasks: list[Task]) -> int:
    return target_cores(tasks[0].target) if tasks else 1


def measure_schedules(items: list[tuple[Task, object]], database, measurer, provenance: str,
                      sources: list[dict | None] | None = None) -> list[float | None]:
    """Build and time fixed schedules (``(task, Schedule)`` pairs) and commit each as a record.

    Returns each one's latency in seconds, or None where it failed (the reason is in the record).
    """
    from tvm.s_tir import meta_schedule as ms

    args = [ms.arg_info.ArgInfo.from_entry_func(sch.mod) for _, sch in items]
    built = measurer.builder.build([ms.builder.BuilderInput(sch.mod, t.target) for t, sch in items])
    latencies: list[float | None] = []
    for index, ((task, sch), arg_info, result) in enumerate(zip(items, args, built)):
        error_kind, error_msg, run_secs = "build", result.error_msg, None
        if result.error_msg is None:
            ran = measurer.run_built(result.artifact_path, task.target, arg_info)
            error_kind, error_msg = ("run", ran.error_msg) if ran.error_msg else (None, None)
            run_secs = None if ran.error_msg else [float(x) for x in ran.run_secs]
        record = ms.database.TuningRecord(sch.trace, database.commit_workload(task.mod), run_secs,
                                          task.target, arg_info)
        database.commit_record(record, error_kind, error_msg, provenance=provenance,
                               source=sources[index] if sources else None)
        latencies.append(statistics.median(run_secs) if run_secs else None)
    return latencies


DEFAULTS_PER_ROUND = 8


def _unmeasured_defaults(task: Task, database) -> list[tuple[Task, object, str, dict | None]]:
    """A task's fixed schedules that ``database`` has not timed yet: each heuristic schedule (known by
    the hash of the scheduled function, so an improved rule is timed again in a database that holds
    the old one's records), then the unscheduled nest."""
    import tvm
    import tvm_ffi

    from .heuristics import heuristic_schedules

    timed = {s.get("schedule") for s in database.recorded_sources(task.mod, "heuristic")}
    items = []
    for sch in heuristic_schedules(task.mod, task.target):
        fingerprint = str(tvm_ffi.structural_hash(sch.mod))
        if fingerprint not in timed:
            items.append((task, sch, "heuristic", {"schedule": fingerprint}))
    if not database.has_record(task.mod, "default"):
        items.append((task, tvm.s_tir.Schedule(task.mod), "default", None))
    return items


def measure_defaults(tasks: list[Task], database, measurer,
                     may_continue: Callable[[int, list[float]], bool] = lambda *_: True,
                     room: Callable[[int], int] = lambda _: 1 << 30) -> tuple[int, list[float]]:
    """Measure each task's fixed schedules not yet timed: heuristic ones (``heuristics``), naive nest.

    The naive nest runs serially, and for tiny tasks (reshape, transpose, small matmuls) that beats
    every parallel schedule MetaSchedule offers: a parallel region costs 5–18 µs here. The heuristic
    schedules (tiled, vectorised, serial and parallel) are what a task the search never reaches
    gets. Compile picks the fastest record per task. Runs in rounds of up to ``DEFAULTS_PER_ROUND``
    tasks, never more measurements than ``room(measured so far)``, while
    ``may_continue(measured so far, round durations)``; returns (measurements, round durations).
    """
    todo = [items for items in (_unmeasured_defaults(t, database) for t in tasks) if items]
    durations: list[float] = []
    measured = 0
    while todo and may_continue(measured, durations):
        started = time.monotonic()
        chunk: list[tuple[Task, object, str, dict | None]] = []
        while todo and len(chunk) < DEFAULTS_PER_ROUND * 3:
            if len(chunk) + len(todo[0]) > room(measured):
                break
            chunk += todo.pop(0)
        if not chunk:  # the trial budget cannot take the next task's schedules: the search gets the rest
            break
        for provenance in ("heuristic", "default"):
            mine = [item for item in chunk if item[2] == provenance]
            if mine:
                measure_schedules([(t, sch) for t, sch, _, _ in mine], database, measurer, provenance,
                                  sources=[source for *_, source in mine])
        measured += len(chunk)
        durations.append(time.monotonic() - started)
    return measured, durations


def make_recorder(database, on_measured: Callable[[float | None], None]):
    """A measure callback committing every candidate, failures with their reason, to ``database``."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.database import TuningRecord
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class RecordEverything(PyMeasureCallback):
        """Commits successes and failures alike, as they arrive."""

        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            task = task_scheduler.tasks_[task_id].ctx
            workload = database.commit_workload(task.mod)
            for cand, built, ran in zip(measure_candidates, builder_results, runner_results):
                error_kind, error_msg = (("build", built.error_msg) if built.error_msg
                                         else ("run", ran.error_msg) if ran.error_msg else (None, None))
                run_secs = None if error_kind else [float(s) for s in ran.run_secs]
                record = TuningRecord(cand.sch.trace, workload, run_secs, task.target, cand.args_info)
                database.commit_record(record, error_kind, error_msg and str(error_msg)[:4000])
                on_measured(statistics.median(run_secs) if run_secs else None)

    return RecordEverything()


def search(tasks: list[Task], database, measurer, budget: Budget,
           config: SearchConfig = SearchConfig(), progress_fn: ProgressFn | None = None,
           already_measured: int = 0, already_seconds: float = 0.0,
           fixed_for: list[Task] | None = None) -> SearchResult:
    """Tune ``tasks`` within ``budget`` (counting what a resumed job already spent).

    First the fixed schedules not yet timed (``measure_defaults``) of ``fixed_for`` (default:
    ``tasks``; a job passes every task, so an improved heuristic reaches tasks tuned before). The
    budget is checked before every round, default-nest rounds included: a round starts only if
    the trial budget has room and the time budget has room for a round as long as the recent ones.
    """
    start = time.monotonic()

    def room(trials: int, round_seconds: list[float]) -> bool:
        expected = sum(round_seconds[-3:]) / len(round_seconds[-3:]) if round_seconds else 0.0
        seconds = already_seconds + time.monotonic() - start
        return ((budget.trials is None or trials < budget.trials)
                and (budget.seconds is None or seconds + expected <= budget.seconds))

    defaults, round_seconds = measure_defaults(
        tasks if fixed_for is None else fixed_for, database, measurer,
        lambda measured, durations: room(already_measured + measured, durations),
        lambda measured: budget.trials - already_measured - measured if budget.trials else 1 << 30)
    measured_before = already_measured + defaults
    per_round = trials_per_round(budget, len(tasks), config)
    state = _Search(tasks, database, measurer, config, per_round)
    resumed_trials = sum(p.trials for p in state.progress)  # already in ``already_measured``

    def spent() -> tuple[int, float]:
        new_trials = sum(p.trials for p in state.progress) - resumed_trials
        return measured_before + new_trials, already_seconds + time.monotonic() - start

    while tasks and room(spent()[0], round_seconds):
        trials = spent()[0]
        p = _pick_next(state.progress)
        if p is None:
            break
        size = per_round if budget.trials is None else min(per_round, budget.trials - trials)
        round_start = time.monotonic()
        state.run_round(p, size)
        round_seconds.append(time.monotonic() - round_start)
        if progress_fn:
            progress_fn(_progress_event(state, p, *spent()))
    trials, seconds = spent()
    split = measurer.seconds()
    split["search"] = time.monotonic() - start - split["build"] - split["run"]
    split["longest_round"] = max(round_seconds, default=0.0)
    return SearchResult(trials_measured=trials, failures=state.failures, tuning_seconds=seconds,
                        tasks=state.progress, time_split={k: round(v, 2) for k, v in split.items()})


def _progress_event(state: _Search, p: TaskProgress, trials: int, seconds: float) -> dict:
    done = sum(1 for q in state.progress if q.rounds > 0)
    est = SearchResult(trials, state.failures, seconds, state.progress).estimated_latency_ms()
    return {"task": p.task.name, "task_best_ms": None if p.best_s is None else p.best_s * 1e3,
            "tasks_done": done, "tasks_total": len(state.progress), "trials": trials,
            "seconds": seconds, "estimated_latency_ms": est,
            "failures": state.failures}
