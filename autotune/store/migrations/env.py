"""Alembic environment: runs migrations on the connection ``autotune.store.migrate`` hands over."""

from alembic import context

from autotune.store.migrate import VERSION_TABLE
from autotune.store.schema import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                  version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
