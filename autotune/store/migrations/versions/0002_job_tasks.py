"""Job task lists with weights, each record's job clock, one workload row per TIR text.

``job_tasks`` lets history queries estimate a model's latency from the database alone;
``tuning_records.job_seconds`` places each record on the job's tuning clock (curves against wall
time survive a resume); a unique sha256 stops two concurrent tuners from adding the same workload twice.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("job_tasks",
                    sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), primary_key=True),
                    sa.Column("workload_id", sa.Integer, sa.ForeignKey("workloads.id"), primary_key=True),
                    sa.Column("task_name", sa.String(256), nullable=False),
                    sa.Column("weight", sa.Integer, nullable=False),
                    sa.Column("flops", sa.Float, nullable=False))
    with op.batch_alter_table("tuning_records") as batch:
        batch.add_column(sa.Column("job_seconds", sa.Float))
        batch.create_index("ix_tuning_records_job_id", ["job_id"])
    with op.batch_alter_table("workloads") as batch:
        batch.drop_index("ix_workloads_content_sha256")
        batch.create_index("ix_workloads_content_sha256", ["content_sha256"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("workloads") as batch:
        batch.drop_index("ix_workloads_content_sha256")
        batch.create_index("ix_workloads_content_sha256", ["content_sha256"])
    with op.batch_alter_table("tuning_records") as batch:
        batch.drop_index("ix_tuning_records_job_id")
        batch.drop_column("job_seconds")
    op.drop_table("job_tasks")
