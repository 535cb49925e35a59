"""A running job's lease (who holds it, their last heartbeat), one unfinished job per command, its
measuring settings, and which runner measured each record.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UNFINISHED = "status IN ('running', 'interrupted')"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("lease_pid", sa.Integer, nullable=True))
        batch.add_column(sa.Column("lease_host", sa.String(256), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime, nullable=True))
        batch.add_column(sa.Column("settings", sa.JSON, nullable=True))
    # Older releases could leave two unfinished jobs of one command; all but the newest are abandoned.
    op.execute("UPDATE jobs SET status = 'abandoned' WHERE " + UNFINISHED + " AND id NOT IN "
               "(SELECT max(id) FROM jobs WHERE " + UNFINISHED + " GROUP BY resume_key)")
    op.create_index("uq_jobs_unfinished_command", "jobs", ["resume_key"], unique=True,
                    sqlite_where=sa.text(UNFINISHED), postgresql_where=sa.text(UNFINISHED))
    with op.batch_alter_table("tuning_records") as batch:
        batch.add_column(sa.Column("runner", sa.String(256), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tuning_records") as batch:
        batch.drop_column("runner")
    op.drop_index("uq_jobs_unfinished_command", "jobs")
    with op.batch_alter_table("jobs") as batch:
        for column in ("settings", "heartbeat_at", "lease_host", "lease_pid"):
            batch.drop_column(column)
