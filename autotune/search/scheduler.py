"""Which task the next search round goes to."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..frontend.tasks import Task

GAIN_WINDOW = 3  # rounds over which a task's recent improvement is measured


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


def pick_next(progress: list[TaskProgress]) -> TaskProgress | None:
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
        recent = p.history[-GAIN_WINDOW:]
        improvement = (recent[0] - recent[-1]) / recent[0] if len(recent) > 1 and recent[0] else 0.0
        return p.weighted_s() * max(improvement, 1.0 / (1 + p.rounds))
    return max(progress, key=gain)
