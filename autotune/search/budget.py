"""A job's budget: trials and seconds, checked before every round."""

from __future__ import annotations

from dataclasses import dataclass

RECENT_ROUNDS = 3  # a round is expected to last as long as the mean of the last few
MAX_TRIALS_PER_ROUND = 32
MIN_TRIALS_PER_ROUND = 2
TIME_BUDGET_TRIALS_PER_ROUND = 16  # a time budget's round: short enough to stop near the deadline


@dataclass(frozen=True)
class Budget:
    """Stop after ``trials`` measured trials or ``seconds`` of tuning, whichever comes first."""

    trials: int | None = None
    seconds: float | None = None

    def has_room(self, trials: int, seconds: float, round_seconds: list[float]) -> bool:
        """Whether another round fits: a trial left, and time for a round as long as recent ones."""
        recent = round_seconds[-RECENT_ROUNDS:]
        expected = sum(recent) / len(recent) if recent else 0.0
        return ((self.trials is None or trials < self.trials)
                and (self.seconds is None or seconds + expected <= self.seconds))

    def trials_left(self, trials: int) -> int | None:
        """Trials still allowed after ``trials``; None without a trial budget."""
        return None if self.trials is None else self.trials - trials


def trials_per_round(budget: Budget, n_tasks: int, configured: int | None = None) -> int:
    """Round size: ``configured``, else small enough that every task gets about two rounds of a
    trial budget."""
    if configured:
        return configured
    if budget.trials:
        return max(MIN_TRIALS_PER_ROUND, min(MAX_TRIALS_PER_ROUND, budget.trials // max(1, 2 * n_tasks)))
    return TIME_BUDGET_TRIALS_PER_ROUND
