"""The SQL store: an engine on any SQLAlchemy URL, transactions with retries, the schema checked.

SQLite in WAL mode by default (``tuning_logs/autotune.db``), PostgreSQL for teams. Rows are
defined in ``schema``; ``migrate`` creates and upgrades them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..common.records import Provenance
from ..common.text import first_line
from ..errors import AutotuneError, EnvironmentFault
from . import migrate
from .schema import TargetRow, TuningRecordRow
from .selection import RecordSummary

DEFAULT_DB_URL = "sqlite:///tuning_logs/autotune.db"
T = TypeVar("T")
RETRY_WINDOW_S = 60.0  # a PostgreSQL restart or a long lock: retried this long before giving up
RETRY_FIRST_S = 0.05
RETRY_CAP_S = 2.0
# PostgreSQL's SQLSTATEs of faults that retrying the transaction cures: serialization failure,
# deadlock, the server shutting down or restarting, the connection lost.
TRANSIENT_SQLSTATES = {"40001", "40P01", "57P01", "57P02", "57P03", "08000", "08001", "08003", "08006"}
TRANSIENT_TEXT = ("database is locked", "database is busy", "database table is locked",
                  "server closed the connection", "terminating connection", "connection refused",
                  "could not connect", "connection is closed", "the database system is")


def transient(err: DBAPIError) -> bool:
    """Whether retrying the transaction may succeed."""
    if err.connection_invalidated:
        return True
    code = getattr(err.orig, "sqlstate", None) or getattr(err.orig, "pgcode", None)
    text = str(err.orig).lower()
    return code in TRANSIENT_SQLSTATES or any(t in text for t in TRANSIENT_TEXT)


def advice(err: DBAPIError) -> str:
    """What a user can do about a fault that retrying does not cure."""
    text = str(err.orig).lower()
    if "full" in text or "no space" in text or "could not extend" in text:
        return "free space where the database lives"
    if "readonly" in text or "read-only" in text or "read only" in text:
        return "make the database writable (or point --db at a writable copy)"
    if transient(err):
        return "check that the database server is up and reachable"
    return "check the database"


def resolve_db_url(url: str | None) -> str:
    """The URL to use: the flag, else ``AUTOTUNE_DB``, else the embedded SQLite file; a bare path
    (no ``scheme://``) names a SQLite file."""
    chosen = url or os.environ.get("AUTOTUNE_DB") or DEFAULT_DB_URL
    return chosen if "://" in chosen else f"sqlite:///{Path(chosen).expanduser().resolve()}"


def copy_sqlite(url: str, path: str | Path) -> str:
    """A consistent copy of the SQLite database at ``url`` (its WAL included) at ``path``; its URL."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(resolve_db_url(url).removeprefix("sqlite:///"))) as source, \
            contextlib.closing(sqlite3.connect(path)) as target:
        source.backup(target)
    return f"sqlite:///{path}"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    """WAL (readers never wait for the writer), where the file can be written: on a read-only
    file or mount the database stays in its journal mode and read-only commands still work."""
    import sqlite3

    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError:  # "attempt to write a readonly database"
        pass
    cursor.execute("PRAGMA synchronous=NORMAL")
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
        except (DBAPIError, OSError) as err:  # the database is there, but cannot be reached or read
            raise EnvironmentFault(f"cannot open database --db {self.url}: {first_line(err, 200)}") from None
        except (SQLAlchemyError, ValueError, ModuleNotFoundError) as err:  # the URL itself is wrong
            raise AutotuneError(f"cannot open database --db {self.url}: {first_line(err, 200)}") from None
        if check_schema and revision != migrate.head_revision():
            raise EnvironmentFault(f"database --db {self.url} is at schema revision {revision}, this "
                                f"autotune needs {migrate.head_revision()}: run `autotune db upgrade "
                                f"--db {self.url}` (back it up first)")
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.last_fault: EnvironmentFault | None = None

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

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A new ORM session; a database fault inside becomes one clear ``EnvironmentFault``
        (use ``read``/``write`` where a transient fault should be retried)."""
        try:
            with self._sessions() as session:
                yield session
        except DBAPIError as err:
            raise self.fault(err) from None

    def fault(self, err: DBAPIError) -> EnvironmentFault:
        """The error to stop with for ``err``, naming the database and what to do. It is also kept
        as ``last_fault``: TVM rewraps what a callback raises, and the search looks here."""
        self.last_fault = EnvironmentFault(
            f"database --db {self.url} failed: {first_line(err.orig or err, 200)}; {advice(err)}, then "
            "rerun the same command (the job resumes)")
        return self.last_fault

    def read(self, work: Callable[[Session], T]) -> T:
        """Run the query ``work``, retried like ``write``."""
        return self._retried(work, writing=False)

    def write(self, work: Callable[[Session], T], clash_raises: bool = False) -> T:
        """Run ``work`` in one transaction, retried with backoff while the fault is transient (a
        lock, a serialization failure or deadlock, a dropped connection), for up to
        ``RETRY_WINDOW_S``; another fault stops with one clear ``EnvironmentFault``, but with
        ``clash_raises`` a unique key clash (another process inserted the row) raises its
        ``IntegrityError`` for the caller to take that row."""
        return self._retried(work, writing=True, clash_raises=clash_raises)

    def _retried(self, work: Callable[[Session], T], writing: bool, clash_raises: bool = False) -> T:
        started = time.monotonic()
        for attempt in itertools.count():
            try:
                with self._sessions() as session:
                    if not writing:
                        return work(session)
                    with session.begin():
                        return work(session)
            except DBAPIError as err:
                if clash_raises and isinstance(err, IntegrityError):
                    raise
                if not transient(err) or time.monotonic() - started > RETRY_WINDOW_S:
                    raise self.fault(err) from None
                time.sleep(min(RETRY_CAP_S, RETRY_FIRST_S * 2 ** attempt))
        raise AssertionError("unreachable")

    def get_or_create(self, work: Callable[[Session], T]) -> T:
        """Run a find-else-insert ``work``; if another process inserted the same row meanwhile
        (a unique key clash), run it again, and the find now returns that row."""
        try:
            return self.write(work, clash_raises=True)
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

    def rpc_keys(self, target_id: int) -> set[str]:
        """The RPC keys whose servers timed records of ``target_id``."""
        runners = self.read(lambda session: list(session.scalars(select(TuningRecordRow.runner).distinct().where(
            TuningRecordRow.target_id == target_id, TuningRecordRow.runner.like("rpc:%")))))
        return {runner.removeprefix("rpc:").split("@", 1)[0] for runner in runners}

    def record_summaries(self, workload_ids: list[int], target_id: int | None = None
                         ) -> dict[int, list[RecordSummary]]:
        """Per workload, its successful records (on ``target_id``, else every target) as the
        columns choosing among them needs (``selection.Selection``)."""
        columns = (TuningRecordRow.id, TuningRecordRow.workload_id, TuningRecordRow.latency_s,
                   TuningRecordRow.provenance, TuningRecordRow.job_id, TuningRecordRow.measured_at,
                   TuningRecordRow.runner)
        where = [TuningRecordRow.workload_id.in_(workload_ids), TuningRecordRow.latency_s.is_not(None)]
        if target_id is not None:
            where.append(TuningRecordRow.target_id == target_id)
        def work(session: Session) -> tuple[list, dict]:
            rows = session.execute(select(*columns).where(*where)).all()
            sources = dict(session.execute(select(TuningRecordRow.id, TuningRecordRow.source).where(
                *where, TuningRecordRow.provenance.in_([str(Provenance.MANUAL), str(Provenance.CONFIRM)]))).all())
            return rows, sources
        rows, sources = self.read(work)
        grouped: dict[int, list[RecordSummary]] = {}
        for row in rows:
            source = sources.get(row[0]) or {}
            origin = (f"{source['provenance']} #{source['record_id']}" if row[3] == Provenance.CONFIRM
                      and "record_id" in source else None)
            grouped.setdefault(row[1], []).append(RecordSummary(*row, manual_name=source.get("name"), origin=origin))
        return grouped

