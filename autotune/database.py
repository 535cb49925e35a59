"""The SQL store of tuning history and the MetaSchedule ``Database`` backed by it.

``Store`` opens any SQLAlchemy URL (SQLite in WAL mode by default, PostgreSQL for teams) and
owns the rows; ``SqlDatabase`` is what MetaSchedule searches and compiles against. Records are
keyed by workload *and* target, so another model with identical tasks reuses them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import create_engine, event, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from . import migrate
from .errors import AutotuneError
from .schema import TargetRow, TuningRecordRow, WorkloadRow

DEFAULT_DB_URL = "sqlite:///tuning_logs/autotune.db"
CONFIRM = "confirm"  # provenance of a re-timed finalist that won (``autotune.confirm``); not a trial
T = TypeVar("T")


def _plain_json(value):
    """A TVM JSON tree as Python values; an object (a layout's IndexMap) as its JSON string."""
    import tvm
    from tvm.tirx import FloatImm, IntImm
    from tvm_ffi import Array, Map

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (IntImm, FloatImm)):
        return value.value
    if isinstance(value, (Array, list, tuple)):
        return [_plain_json(v) for v in value]
    if isinstance(value, Map):
        return {_plain_json(k): _plain_json(v) for k, v in value.items()}
    return tvm.ir.save_json(value)  # how Trace.FromJSON reads an IndexMap input back


def latency_of(run_secs: list[float]) -> float | None:
    """The latency a record keeps from its run times: the upper median; None when it has none."""
    return sorted(run_secs)[len(run_secs) // 2] if run_secs else None


def record_json(record) -> str:
    """A tuning record as JSON text that ``TuningRecord.from_json`` reads back.

    Not ``record.as_json()``: in TVM 0.27 it raises on traces with ``transform_layout`` (weight
    pre-packing), whose IndexMap input it leaves as an object instead of its JSON string.
    """
    from tvm.s_tir.meta_schedule import _ffi_api

    return json.dumps(_plain_json(_ffi_api.TuningRecordAsJSON(record)))


def resolve_db_url(url: str | None) -> str:
    """The URL to use: the flag, else ``AUTOTUNE_DB``, else the embedded SQLite file."""
    return url or os.environ.get("AUTOTUNE_DB") or DEFAULT_DB_URL


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


class Store:
    """A connection to the tuning database; creates the schema on first use.

    A database at an older schema revision is refused with the command that upgrades it, unless
    ``check_schema`` is false (``autotune db upgrade`` opens it that way).
    """

    def __init__(self, url: str | None = None, check_schema: bool = True):
        self.url = resolve_db_url(url)
        try:
            self.engine = _make_engine(self.url)
            revision = self._create_if_empty() if check_schema else None
        except (SQLAlchemyError, OSError, ValueError, ModuleNotFoundError) as err:
            reason = str(err).splitlines()[0][:200]
            raise AutotuneError(f"cannot open database --db {self.url}: {reason}") from None
        if check_schema and revision != migrate.head_revision():
            raise AutotuneError(f"database --db {self.url} is at schema revision {revision}, this "
                                f"autotune needs {migrate.head_revision()}: run `autotune db upgrade "
                                f"--db {self.url}` (back it up first)")
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def _create_if_empty(self) -> str | None:
        revision = migrate.current_revision(self.engine)
        if revision is None:
            try:
                migrate.upgrade(self.engine)
            except SQLAlchemyError:
                pass  # another process created it first; the re-read below tells
            revision = migrate.current_revision(self.engine)
        return revision

    def upgrade(self) -> tuple[str | None, str]:
        """Migrate the schema in place to the newest revision; returns (before, after)."""
        before = migrate.current_revision(self.engine)
        migrate.upgrade(self.engine)
        return before, migrate.current_revision(self.engine)

    def session(self) -> Session:
        """A new ORM session (use as a context manager)."""
        return self._sessions()

    def write(self, work: Callable[[Session], T], attempts: int = 8) -> T:
        """Run ``work`` in one transaction, retrying when another writer holds the lock."""
        for attempt in range(attempts):
            try:
                with self.session() as session, session.begin():
                    return work(session)
            except OperationalError as err:
                if "locked" not in str(err) or attempt == attempts - 1:
                    raise
                time.sleep(0.05 * 2 ** attempt)
        raise AssertionError("unreachable")

    def get_or_create(self, work: Callable[[Session], T]) -> T:
        """Run a find-else-insert ``work``; if another process inserted the same row meanwhile
        (a unique key clash), run it again, and the find now returns that row."""
        try:
            return self.write(work)
        except IntegrityError:
            return self.write(work)

    def target_id(self, canonical: str, host_features: str = "") -> int:
        """The id of a target row, created if new."""
        def work(session: Session) -> int:
            row = session.scalars(select(TargetRow).where(TargetRow.canonical == canonical)).first()
            if row is None:
                row = TargetRow(canonical=canonical, host_features=host_features)
                session.add(row)
                session.flush()
            return row.id
        return self.get_or_create(work)


def workload_keys(mod) -> tuple[str, str, str]:
    """(structural hash, sha256 of the TIR text, TIR text) of a task's IRModule."""
    import tvm_ffi

    text = mod.script()
    return str(tvm_ffi.structural_hash(mod)), hashlib.sha256(text.encode()).hexdigest(), text


def _ms():
    from tvm.s_tir import meta_schedule

    return meta_schedule


def make_sql_database(store: Store, target_canonical: str, job_id: int | None = None,
                      provenance: str = "search"):
    """A MetaSchedule ``Database`` over ``store`` for one target (records of other targets unseen)."""
    ms = _ms()
    from tvm.ir.utils import derived_object

    @derived_object
    class SqlDatabase(ms.database.PyDatabase):
        """MetaSchedule database whose rows live in the SQL store."""

        def __init__(self):
            super().__init__()
            self.store = store
            self.job_id = job_id
            self.provenance = provenance
            self.job_clock: Callable[[], float] | None = None  # the job's tuning seconds, if any
            self.pins: set[str] = set()  # manual schedule names compile must use where they apply
            self.overrides: dict[int, TuningRecordRow] = {}  # workload id -> the row to use, above all
            self.target_id = store.target_id(target_canonical)
            self._workloads: dict[int, tuple] = {}

        def _find(self, mod) -> tuple[int, object] | None:
            import tvm_ffi

            shash, content, _text = workload_keys(mod)
            with self.store.session() as session:
                rows = session.execute(select(WorkloadRow.id, WorkloadRow.workload_json).where(
                    WorkloadRow.structural_hash == shash)).all()
            for row_id, workload_json in rows:
                workload = self._workload(row_id, workload_json)
                if tvm_ffi.structural_equal(workload.mod, mod):
                    return row_id, workload
            return None

        def _workload(self, row_id: int, workload_json: str):
            if row_id not in self._workloads:
                self._workloads[row_id] = ms.database.Workload.from_json(json.loads(workload_json))
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
                row_id = self.store.write(work)
            except IntegrityError:  # another process committed the same workload meanwhile
                return self._find(mod)[0]
            self._workloads[row_id] = workload
            return row_id

        def has_workload(self, mod) -> bool:
            return self._find(mod) is not None

        def commit_workload(self, mod):
            return self._workloads[self.workload_id(mod)]

        def commit_tuning_record(self, record) -> None:
            self.commit_record(record, error_kind=None, error_msg=None)

        def commit_record(self, record, error_kind: str | None, error_msg: str | None,
                          provenance: str | None = None, source: dict | None = None) -> int:
            """Store one measured (or failed) candidate; returns its row id."""
            wid = self.workload_id(record.workload.mod)
            run_secs = [float(s) for s in record.run_secs] if record.run_secs is not None else []
            latency = None if error_kind else latency_of(run_secs)

            def work(session: Session) -> int:
                row = TuningRecordRow(job_id=self.job_id, workload_id=wid, target_id=self.target_id,
                                      job_seconds=self.job_clock() if self.job_clock else None,
                                      record_json=record_json(record), latency_s=latency,
                                      error_kind=error_kind, error_msg=error_msg,
                                      provenance=provenance or self.provenance, source=source)
                session.add(row)
                session.flush()
                return row.id
            return self.store.write(work)

        def best_rows(self, mod, top_k: int) -> list[TuningRecordRow]:
            """The ``top_k`` fastest successful record rows of ``mod`` on this target."""
            found = self._find(mod)
            if found is None:
                return []
            with self.store.session() as session:
                return list(session.scalars(
                    select(TuningRecordRow)
                    .where(TuningRecordRow.workload_id == found[0],
                           TuningRecordRow.target_id == self.target_id,
                           TuningRecordRow.latency_s.is_not(None))
                    .order_by(TuningRecordRow.latency_s, TuningRecordRow.id).limit(top_k)))

        def chosen_row(self, mod) -> TuningRecordRow | None:
            """What compile uses: a pinned manual schedule's record, else the winner of the newest
            confirmation (``autotune.confirm``), else the fastest record."""
            if self.overrides:
                found = self._find(mod)
                if found is not None and found[0] in self.overrides:
                    return self.overrides[found[0]]
            if self.pins:
                manual = [r for r in self.best_rows(mod, 1000) if r.provenance == "manual"
                          and (r.source or {}).get("name") in self.pins]
                if manual:
                    return manual[0]
            confirmed = self._newest_confirmation(mod)
            if confirmed is not None:
                return confirmed
            rows = self.best_rows(mod, 1)
            return rows[0] if rows else None

        def _newest_confirmation(self, mod) -> TuningRecordRow | None:
            found = self._find(mod)
            if found is None:
                return None
            with self.store.session() as session:
                return session.scalars(
                    select(TuningRecordRow)
                    .where(TuningRecordRow.workload_id == found[0],
                           TuningRecordRow.target_id == self.target_id,
                           TuningRecordRow.provenance == CONFIRM, TuningRecordRow.latency_s.is_not(None))
                    .order_by(TuningRecordRow.id.desc()).limit(1)).first()

        def has_record(self, mod, provenance: str) -> bool:
            """Whether ``mod`` has any record (even a failed one) of ``provenance`` on this target."""
            found = self._find(mod)
            if found is None:
                return False
            with self.store.session() as session:
                return session.scalar(select(TuningRecordRow.id).where(
                    TuningRecordRow.workload_id == found[0], TuningRecordRow.target_id == self.target_id,
                    TuningRecordRow.provenance == provenance).limit(1)) is not None

        def recorded_sources(self, mod, provenance: str) -> list[dict]:
            """The ``source`` of every record of ``mod`` with ``provenance`` on this target (non-empty)."""
            found = self._find(mod)
            if found is None:
                return []
            with self.store.session() as session:
                return [s for s in session.scalars(select(TuningRecordRow.source).where(
                    TuningRecordRow.workload_id == found[0], TuningRecordRow.target_id == self.target_id,
                    TuningRecordRow.provenance == provenance)) if s]

        def job_trials(self, mod) -> int:
            """Candidates this job has already searched for ``mod`` (not default nests, not manual)."""
            found = self._find(mod)
            if found is None or self.job_id is None:
                return 0
            with self.store.session() as session:
                return session.scalar(select(func.count(TuningRecordRow.id)).where(
                    TuningRecordRow.workload_id == found[0], TuningRecordRow.job_id == self.job_id,
                    TuningRecordRow.provenance == "search")) or 0

        def _to_record(self, row: TuningRecordRow, workload):
            return ms.database.TuningRecord.from_json(json.loads(row.record_json), workload)

        def get_top_k(self, workload, top_k: int):
            rows = self.best_rows(workload.mod, top_k)
            chosen = self.chosen_row(workload.mod)
            if chosen is not None:
                rows = [chosen, *(r for r in rows if r.id != chosen.id)][:top_k]
            return [self._to_record(row, workload) for row in rows]

        def get_all_tuning_records(self):
            with self.store.session() as session:
                rows = list(session.scalars(select(TuningRecordRow).where(
                    TuningRecordRow.target_id == self.target_id,
                    TuningRecordRow.latency_s.is_not(None))))
                wl_json = dict(session.execute(select(WorkloadRow.id, WorkloadRow.workload_json)).all())
            return [self._to_record(r, self._workload(r.workload_id, wl_json[r.workload_id]))
                    for r in rows]

        def __len__(self) -> int:
            with self.store.session() as session:
                return session.scalar(select(func.count(TuningRecordRow.id)).where(
                    TuningRecordRow.target_id == self.target_id,
                    TuningRecordRow.latency_s.is_not(None))) or 0

    return SqlDatabase()
