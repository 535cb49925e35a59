"""The SQL store: an engine on any SQLAlchemy URL, transactions with retries, the schema checked.

SQLite in WAL mode by default (``tuning_logs/autotune.db``), PostgreSQL for teams. Rows are
defined in ``schema``; ``migrate`` creates and upgrades them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..common.records import Provenance
from ..common.text import first_line
from ..errors import AutotuneError
from . import migrate
from .schema import TargetRow, TuningRecordRow
from .selection import RecordSummary

DEFAULT_DB_URL = "sqlite:///tuning_logs/autotune.db"
T = TypeVar("T")


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
            reason = first_line(err, 200)
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

    def record_summaries(self, workload_ids: list[int], target_id: int | None = None
                         ) -> dict[int, list[RecordSummary]]:
        """Per workload, its successful records (on ``target_id``, else every target) as the
        columns choosing among them needs (``selection.Selection``)."""
        columns = (TuningRecordRow.id, TuningRecordRow.workload_id, TuningRecordRow.latency_s,
                   TuningRecordRow.provenance, TuningRecordRow.job_id, TuningRecordRow.measured_at)
        where = [TuningRecordRow.workload_id.in_(workload_ids), TuningRecordRow.latency_s.is_not(None)]
        if target_id is not None:
            where.append(TuningRecordRow.target_id == target_id)
        with self.session() as session:
            rows = session.execute(select(*columns).where(*where)).all()
            names = dict(session.execute(select(TuningRecordRow.id, TuningRecordRow.source).where(
                *where, TuningRecordRow.provenance == str(Provenance.MANUAL))).all())
        grouped: dict[int, list[RecordSummary]] = {}
        for row in rows:
            name = (names.get(row[0]) or {}).get("name")
            grouped.setdefault(row[1], []).append(RecordSummary(*row, manual_name=name))
        return grouped

