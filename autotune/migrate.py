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


def _config(connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest schema revision this release knows."""
    return ScriptDirectory.from_config(_config(None)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The database's revision; ``None`` for an empty database.

    A database from before migrations existed (tables, no ``alembic_version``) is the first revision.
    """
    with engine.connect() as conn:
        revision = MigrationContext.configure(conn).get_current_revision()
        if revision is None and inspect(conn).has_table("jobs"):
            return FIRST_REVISION
    return revision


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` (creating it when empty)."""
    current = current_revision(engine)
    with engine.begin() as conn:
        config = _config(conn)
        if current == FIRST_REVISION and not MigrationContext.configure(conn).get_current_revision():
            command.stamp(config, FIRST_REVISION)
        command.upgrade(config, revision)
