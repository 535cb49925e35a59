"""The MetaSchedule driver: rounds of evolutionary search between budget checks.

Stock ``tune_relax`` has no time budget and cannot stop a task from a callback without crashing its
scheduler, so the search runs in *rounds*: each round is one stock ``tune_tasks`` call on one task
for ``trials_per_round`` trials, sharing one database and one XGBoost cost model with every other
round. Between rounds ``scheduler.pick_next`` picks the next task and the budget is checked, so a
time budget is honoured to within one round.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..backends import backend_for
from ..common import stopping
from ..common.records import estimated_latency_ms
from ..common.text import first_line
from ..errors import AutotuneError
from ..frontend.tasks import Task
from ..targets.names import target_cores
from .budget import Budget, trials_per_round
from .fixed import measure_defaults
from .recorder import make_recorder
from .scheduler import TaskProgress, pick_next
from .tvm_setup import register_tensor_intrinsics

logger = logging.getLogger(__name__)
ProgressFn = Callable[[dict], None]


@dataclass(frozen=True)
class SearchConfig:
    """Evolutionary search settings sized for small budgets on a few cores."""

    population_size: int = 32
    init_min_unmeasured: int = 8
    genetic_num_iters: int = 2
    trials_per_round: int | None = None  # None: derived from the budget
    seed: int = 0


@dataclass
class SearchResult:
    """Totals of a search."""

    trials_measured: int
    failures: int
    tuning_seconds: float
    tasks: list[TaskProgress]
    time_split: dict[str, float] = field(default_factory=dict)

    def estimated_latency_ms(self) -> float | None:
        """The model's latency from every task's best so far (None while one has none)."""
        return estimated_latency_ms((p.task.weight, p.best_s) for p in self.tasks)


class _Search:
    """The search state of one job: a tuning context per task and one shared cost model."""

    def __init__(self, tasks: list[Task], database, measurer, config: SearchConfig, per_round: int):
        from tvm.s_tir import meta_schedule as ms

        if tasks:
            register_tensor_intrinsics(backend_for(tasks[0].target))
        self.ms = ms
        self.database = database
        self.measurer = measurer
        self.progress = [TaskProgress(t) for t in tasks]
        self.contexts = [self._context(t, i, config) for i, t in enumerate(tasks)]
        cores = target_cores(tasks[0].target) if tasks else 1
        self.cost_model = ms.cost_model.CostModel.create("xgb", num_tuning_cores=cores)
        self.failures = 0
        self._load_state(per_round)

    def _context(self, task: Task, index: int, config: SearchConfig):
        strategy = self.ms.search_strategy.EvolutionarySearch(
            population_size=config.population_size, init_min_unmeasured=config.init_min_unmeasured,
            genetic_num_iters=config.genetic_num_iters)
        space = backend_for(task.target).search_space(task.mod, task.target)
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
        """One round of search on ``p``'s task. A failure of MetaSchedule on the task marks it
        unsearchable (it keeps its fixed schedules); a database fault stops the job instead."""
        index = self.progress.index(p)
        recorder = make_recorder(self.database, self._on_measured(p), self.measurer.runner_id)
        self.database.store.last_fault = None
        with tempfile.TemporaryDirectory(prefix="autotune-ms-") as work_dir:
            try:
                self._tune_tasks(index, p, trials, recorder, work_dir)
            except AutotuneError:
                raise
            except Exception as err:  # noqa: BLE001 - a TVM bug in one task's design space
                fault = self.database.store.last_fault or self.measurer.fault
                if fault is not None:  # the database or the workers failed, rewrapped by TVM
                    raise fault from None
                p.search_error = first_line(err)
                logger.warning("task %s cannot be searched, it keeps its default schedules: %s",
                               p.task.name, p.search_error)
        p.rounds += 1
        if p.best_s is not None:
            p.history.append(p.best_s)

    def _tune_tasks(self, index: int, p: TaskProgress, trials: int, recorder, work_dir: str) -> None:
        with stopping.deferred():  # MetaSchedule calls back into Python throughout the round
            self._stock_tune_tasks(index, p, trials, recorder, work_dir)

    def _stock_tune_tasks(self, index: int, p: TaskProgress, trials: int, recorder, work_dir: str) -> None:
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

    def event(self, p: TaskProgress, trials: int, seconds: float) -> dict:
        """The progress report after a round on ``p``."""
        estimate = estimated_latency_ms((q.task.weight, q.best_s) for q in self.progress)
        return {"task": p.task.name, "task_best_ms": None if p.best_s is None else p.best_s * 1e3,
                "tasks_done": sum(1 for q in self.progress if q.rounds > 0),
                "tasks_total": len(self.progress), "trials": trials, "seconds": seconds,
                "estimated_latency_ms": estimate, "failures": self.failures}


@dataclass
class _Clock:
    """Trials and seconds a job has spent: before this session, then since ``start``."""

    trials_before: int
    seconds_before: float
    start: float = field(default_factory=time.monotonic)

    def seconds(self) -> float:
        return self.seconds_before + time.monotonic() - self.start


def search(tasks: list[Task], database, measurer, budget: Budget,
           config: SearchConfig = SearchConfig(), progress_fn: ProgressFn | None = None,
           already_measured: int = 0, already_seconds: float = 0.0,
           fixed_for: list[Task] | None = None) -> SearchResult:
    """Tune ``tasks`` within ``budget`` (counting what a resumed job already spent).

    First the fixed schedules not yet timed (``fixed.measure_defaults``) of ``fixed_for`` (default:
    ``tasks``; a job passes every task, so an improved heuristic reaches tasks tuned before). The
    budget is checked before every round, default-nest rounds included: a round starts only if
    the trial budget has room and the time budget has room for a round as long as the recent ones.
    """
    clock = _Clock(already_measured, already_seconds)
    defaults, round_seconds = measure_defaults(
        tasks if fixed_for is None else fixed_for, database, measurer,
        lambda measured, durations: budget.has_room(clock.trials_before + measured, clock.seconds(),
                                                    durations),
        lambda measured: (budget.trials_left(clock.trials_before + measured) if budget.trials
                          else 1 << 30))
    clock.trials_before += defaults
    per_round = trials_per_round(budget, len(tasks), config.trials_per_round)
    state = _Search(tasks, database, measurer, config, per_round)
    resumed_trials = sum(p.trials for p in state.progress)  # already in ``already_measured``

    def trials() -> int:
        return clock.trials_before + sum(p.trials for p in state.progress) - resumed_trials

    while tasks and budget.has_room(trials(), clock.seconds(), round_seconds):
        p = pick_next(state.progress)
        if p is None:
            break
        size = per_round if budget.trials is None else min(per_round, budget.trials_left(trials()))
        round_start = time.monotonic()
        state.run_round(p, size)
        round_seconds.append(time.monotonic() - round_start)
        if progress_fn:
            progress_fn(state.event(p, trials(), clock.seconds()))
    split = measurer.seconds()
    split["search"] = time.monotonic() - clock.start - split["build"] - split["run"]
    split["longest_round"] = max(round_seconds, default=0.0)
    return SearchResult(trials_measured=trials(), failures=state.failures, tuning_seconds=clock.seconds(),
                        tasks=state.progress, time_split={k: round(v, 2) for k, v in split.items()})
