"""The MetaSchedule ``Database`` backed by the SQL store: what the search commits to and compile
reads from. Records are keyed by workload *and* target, so another model with identical tasks
reuses them; which record compile takes is the ``Selection`` the database was made with.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import tvm_ffi
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from ..common.records import Provenance
from ..measure.outcome import Outcome
from .engine import Store
from .schema import TuningRecordRow, WorkloadRow
from .selection import Selection
from .tvm_json import record_json, workload_from_json, workload_keys

@dataclass(frozen=True)
class JobContext:
    """The job records are committed for, and its clock (tuning seconds so far)."""

    job_id: int
    clock: Callable[[], float]


@derived_object
class SqlDatabase(ms.database.PyDatabase):
    """MetaSchedule database whose rows live in the SQL store, for one target."""

    def __init__(self, store: Store, target_canonical: str, job: JobContext | None = None,
                 selection: Selection = Selection(), provenance: Provenance = Provenance.SEARCH,
                 workloads: dict | None = None):
        super().__init__()
        self.store = store
        self.target_canonical = target_canonical
        self.job = job
        self.selection = selection
        self.provenance = provenance
        self.target_id = store.target_id(target_canonical)
        self._workloads: dict[int, object] = {} if workloads is None else workloads

    def with_selection(self, selection: Selection) -> SqlDatabase:
        """The same database, choosing records by ``selection`` (workloads already read are shared)."""
        return SqlDatabase(self.store, self.target_canonical, self.job, selection, self.provenance,
                           self._workloads)

    # -- workloads -------------------------------------------------------------------------------

    def _find(self, mod) -> tuple[int, object] | None:
        shash, _content, _text = workload_keys(mod)
        rows = self.store.read(lambda session: session.execute(select(
            WorkloadRow.id, WorkloadRow.workload_json).where(WorkloadRow.structural_hash == shash)).all())
        for row_id, workload_json in rows:
            workload = self._workload(row_id, workload_json)
            if tvm_ffi.structural_equal(workload.mod, mod):
                return row_id, workload
        return None

    def _workload(self, row_id: int, workload_json: str):
        if row_id not in self._workloads:
            self._workloads[row_id] = workload_from_json(json.loads(workload_json))
        return self._workloads[row_id]

    def workload_id(self, mod) -> int:
        """The row id of ``mod``'s workload, committing it if new."""
        found = self._find(mod)
        if found is not None:
            return found[0]
        workload = ms.database.Workload(mod)
        shash, content, text = workload_keys(mod)

        def work(session: Session) -> int:
            row = WorkloadRow(structural_hash=shash, content_sha256=content,
                              workload_json=json.dumps(workload.as_json()), tir_text=text)
            session.add(row)
            session.flush()
            return row.id
        try:
            row_id = self.store.write(work, clash_raises=True)
        except IntegrityError:  # another process committed the same workload meanwhile
            return self._find(mod)[0]
        self._workloads[row_id] = workload
        return row_id

    def has_workload(self, mod) -> bool:
        return self._find(mod) is not None

    def commit_workload(self, mod):
        return self._workloads[self.workload_id(mod)]

    # -- records ---------------------------------------------------------------------------------

    def commit_tuning_record(self, record) -> None:
        run_secs = None if record.run_secs is None else [float(s) for s in record.run_secs]
        self.commit_record(record, Outcome(run_secs=run_secs))

    def commit_record(self, record, outcome: Outcome, provenance: Provenance | None = None,
                      source: dict | None = None, runner: str | None = None) -> int:
        """Store one measured (or failed) candidate, with the runner that timed it; its row id."""
        wid = self.workload_id(record.workload.mod)

        def work(session: Session) -> int:
            row = TuningRecordRow(job_id=self.job.job_id if self.job else None, workload_id=wid,
                                  target_id=self.target_id,
                                  job_seconds=self.job.clock() if self.job else None,
                                  record_json=record_json(record), latency_s=outcome.latency_s,
                                  error_kind=outcome.error_kind, error_msg=outcome.error_msg,
                                  provenance=str(provenance or self.provenance), source=source,
                                  runner=runner)
            session.add(row)
            session.flush()
            return row.id
        return self.store.write(work)

    def _records(self, mod, *conditions, order=None, limit: int | None = None) -> list[TuningRecordRow]:
        """Record rows of ``mod`` on this target meeting ``conditions``."""
        found = self._find(mod)
        if found is None:
            return []
        query = select(TuningRecordRow).where(TuningRecordRow.workload_id == found[0],
                                              TuningRecordRow.target_id == self.target_id, *conditions)
        if order is not None:
            query = query.order_by(*order)
        return self.store.read(lambda session: list(session.scalars(query.limit(limit))))

    def best_rows(self, mod, top_k: int) -> list[TuningRecordRow]:
        """The ``top_k`` fastest successful record rows of ``mod`` on this target."""
        return self._records(mod, TuningRecordRow.latency_s.is_not(None),
                             order=(TuningRecordRow.latency_s, TuningRecordRow.id), limit=top_k)

    def chosen_row(self, mod) -> TuningRecordRow | None:
        """The record compile uses for ``mod`` (see ``Selection``)."""
        found = self._find(mod)
        if found is None:
            return None
        summaries = self.store.record_summaries([found[0]], self.target_id).get(found[0], [])
        chosen = self.selection.choose(found[0], summaries)
        if chosen is None:
            return None
        return self.store.read(lambda session: session.get(TuningRecordRow, chosen.id))

    def has_record(self, mod, provenance: Provenance) -> bool:
        """Whether ``mod`` has any record (even a failed one) of ``provenance`` on this target."""
        return bool(self._records(mod, TuningRecordRow.provenance == str(provenance), limit=1))

    def recorded_sources(self, mod, provenance: Provenance) -> list[dict]:
        """The ``source`` of every record of ``mod`` with ``provenance`` on this target (non-empty)."""
        return [row.source for row in self._records(mod, TuningRecordRow.provenance == str(provenance))
                if row.source]

    def job_trials(self, mod) -> int:
        """Candidates this job has already searched for ``mod`` (not fixed schedules)."""
        found = self._find(mod)
        if found is None or self.job is None:
            return 0
        query = select(func.count(TuningRecordRow.id)).where(
            TuningRecordRow.workload_id == found[0], TuningRecordRow.job_id == self.job.job_id,
            TuningRecordRow.provenance == str(Provenance.SEARCH))
        return self.store.read(lambda session: session.scalar(query)) or 0

    def to_record(self, row: TuningRecordRow, workload):
        """The MetaSchedule ``TuningRecord`` of ``row`` (its trace) for ``workload``."""
        return ms.database.TuningRecord.from_json(json.loads(row.record_json), workload)

    def get_top_k(self, workload, top_k: int):
        """The chosen record first, then the fastest; none where the selection chooses none (only
        untrusted runners timed it, or it is passed over), so compile builds the heuristic."""
        chosen = self.chosen_row(workload.mod)
        if chosen is None:
            return []
        rows = self.best_rows(workload.mod, top_k)
        rows = [chosen, *(r for r in rows if r.id != chosen.id)][:top_k]
        return [self.to_record(row, workload) for row in rows]

    def get_all_tuning_records(self):
        def work(session: Session) -> tuple[list, dict]:
            rows = list(session.scalars(select(TuningRecordRow).where(
                TuningRecordRow.target_id == self.target_id, TuningRecordRow.latency_s.is_not(None))))
            return rows, dict(session.execute(select(WorkloadRow.id, WorkloadRow.workload_json)).all())
        rows, wl_json = self.store.read(work)
        return [self.to_record(r, self._workload(r.workload_id, wl_json[r.workload_id])) for r in rows]

    def __len__(self) -> int:
        query = select(func.count(TuningRecordRow.id)).where(TuningRecordRow.target_id == self.target_id,
                                                             TuningRecordRow.latency_s.is_not(None))
        return self.store.read(lambda session: session.scalar(query)) or 0
