"""Which record of a workload an artifact is built from: one policy for compile and ``history``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..common.records import Provenance


@dataclass(frozen=True)
class RecordSummary:
    """The columns of a successful record that choosing among records needs (no trace)."""

    id: int
    workload_id: int
    latency_s: float
    provenance: str
    job_id: int | None
    measured_at: dt.datetime
    runner: str | None = None  # who timed it: local:HOST, rpc:KEY@HOST:PORT (None: before runners were kept)
    manual_name: str | None = None  # the hand schedule's name, for manual records
    origin: str | None = None  # for a confirmation: the provenance and id of the record it re-timed


@dataclass(frozen=True)
class Selection:
    """The record compile uses for a workload, first that applies:

    1. ``overrides`` (workload id → record id): a build of chosen finalists (``jobs.confirm``);
    2. the fastest record of a manual schedule named in ``pins``;
    3. the newest confirmation (a re-timing of the finalists, ``jobs.confirm``);
    4. the fastest record (ties: the oldest).

    With ``runners``, only records timed by those runners count (``trusted``); a workload in
    ``passed_over`` takes none (compile builds its heuristic schedule).
    """

    pins: frozenset[str] = frozenset()
    overrides: Mapping[int, int] = field(default_factory=dict)
    runners: frozenset[str] | None = None
    passed_over: frozenset[int] = frozenset()

    def trusted(self, record: RecordSummary) -> bool:
        """Whether ``record`` was timed by a trusted runner: ``local`` trusts every local measurer,
        ``rpc:KEY`` every server of a key, a full ``rpc:KEY@HOST:PORT`` one server."""
        if self.runners is None:
            return True
        runner = record.runner or ""
        return any(runner == r or runner.startswith(f"{r}:") or runner.startswith(f"{r}@")
                   for r in self.runners)

    def choose(self, workload_id: int, records: Sequence[RecordSummary]) -> RecordSummary | None:
        """The chosen one of a workload's successful ``records`` on one target; None if none."""
        records = [r for r in records if self.trusted(r)]
        if not records or workload_id in self.passed_over:
            return None
        wanted = self.overrides.get(workload_id)
        overridden = [r for r in records if r.id == wanted]
        if overridden:
            return overridden[0]
        pinned = [r for r in records if r.provenance == Provenance.MANUAL and r.manual_name in self.pins]
        if pinned:
            return _fastest(pinned)
        confirmed = [r for r in records if r.provenance == Provenance.CONFIRM]
        if confirmed:
            return max(confirmed, key=lambda r: r.id)
        return _fastest(records)


def _fastest(records: Sequence[RecordSummary]) -> RecordSummary:
    return min(records, key=lambda r: (r.latency_s, r.id))
