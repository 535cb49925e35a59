"""What a tuning record is worth: where it came from, its latency, and a model's estimate from them."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum


class Provenance(str, Enum):
    """Where a tuning record came from (stored as its value in the ``provenance`` column)."""

    SEARCH = "search"  # a MetaSchedule candidate
    HEURISTIC = "heuristic"  # a fixed schedule of ``schedules.heuristics`` (its hash in ``source``)
    DEFAULT = "default"  # the unscheduled loop nest
    MANUAL = "manual"  # a hand schedule (name, file, sha256 in ``source``)
    CONFIRM = "confirm"  # a finalist's re-timing that won (the contenders in ``source``); not a trial
    IMPORTED = "imported"  # brought in from a stock MetaSchedule JSON database (``store.interchange``)

    def __str__(self) -> str:
        return self.value


def latency_of(run_secs: list[float]) -> float | None:
    """The latency a record keeps from its run times: the upper median; None when it has none."""
    return sorted(run_secs)[len(run_secs) // 2] if run_secs else None


def estimated_latency_ms(tasks: Iterable[tuple[int, float | None]]) -> float | None:
    """A model's latency estimated from its tasks' ``(calls per inference, best seconds)``: the sum
    of calls × best, in ms; None while a task has no measurement."""
    total = 0.0
    for weight, best_s in tasks:
        if best_s is None:
            return None
        total += weight * best_s
    return 1e3 * total
