"""Schema migrations with Alembic: create a new database, upgrade an old one in place."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Engine

FIRST_REVISION = "0001"
# Not Alembic's default ``alembic_version``: Optuna's storage keeps its own under that name in the
# same database (the graph-level study lives beside the tuning records).
VERSION_TABLE = "autotune_schema_version"


def _config(connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    config.attributes["connection"] = connection
    return config


def _context(conn) -> MigrationContext:
    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})


def head_revision() -> str:
    """The newest schema revision this release knows."""
    return ScriptDirectory.from_config(_config(None)).get_current_head()


def _predates_migrations(conn, stamped: str | None) -> bool:
    """Tables but no version row (``stamped`` is None): a database from before migrations existed."""
    return stamped is None and inspect(conn).has_table("jobs")


def _revision(conn) -> str | None:
    stamped = _context(conn).get_current_revision()
    return FIRST_REVISION if _predates_migrations(conn, stamped) else stamped


def current_revision(engine: Engine) -> str | None:
    """The database's revision; ``None`` for an empty database.

    A database from before migrations existed (tables, no ``alembic_version``) is the first revision.
    """
    with engine.connect() as conn:
        return _revision(conn)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` (creating it when empty), in one transaction.

    On SQLite the write lock is taken before the revision is read: Python's sqlite3 runs DDL outside
    any transaction, so without it a second process creating the same new file saw the tables before
    their version row and refused the database as an old revision.
    """
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        config = _config(conn)
        if _predates_migrations(conn, _context(conn).get_current_revision()):
            command.stamp(config, FIRST_REVISION)
        command.upgrade(config, revision)
