"""Where a record's schedule came from, beyond its provenance: a manual schedule's name and source hash.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tuning_records") as batch:
        batch.add_column(sa.Column("source", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("tuning_records") as batch:
        batch.drop_column("source")
