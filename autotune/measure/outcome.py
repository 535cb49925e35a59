"""What measuring one candidate came to: its run times, or the step that failed and why."""

from __future__ import annotations

from dataclasses import dataclass

from ..common.records import latency_of

ERROR_TEXT_LIMIT = 4000  # characters of a failure's reason kept with its record


@dataclass(frozen=True)
class Outcome:
    """A candidate's measurement: ``run_secs`` when it ran, else ``error_kind`` (build, run) and
    ``error_msg``."""

    run_secs: list[float] | None = None
    error_kind: str | None = None
    error_msg: str | None = None

    @property
    def latency_s(self) -> float | None:
        """The record's latency (``common.records.latency_of``); None when it failed."""
        return None if self.error_kind else latency_of(self.run_secs or [])


def outcome_of(built, ran) -> Outcome:
    """The ``Outcome`` of a MetaSchedule ``BuilderResult`` and the ``RunnerResult`` of running it
    (``ran`` is ignored, and may be None, when the build failed)."""
    if built.error_msg:
        return Outcome(error_kind="build", error_msg=str(built.error_msg)[:ERROR_TEXT_LIMIT])
    if ran.error_msg:
        return Outcome(error_kind="run", error_msg=str(ran.error_msg)[:ERROR_TEXT_LIMIT])
    return Outcome(run_secs=[float(s) for s in ran.run_secs])
