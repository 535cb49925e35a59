"""The first release's schema: models, targets, workloads, jobs, tuning records, artifacts.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("artifacts",
                    sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("path", sa.Text, nullable=False),
                    sa.Column("sha256", sa.String(64), nullable=False),
                    sa.Column("manifest", sa.JSON, nullable=False),
                    sa.Column("created_at", sa.DateTime, nullable=False))
    op.create_table("models",
                    sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.String(256), nullable=False),
                    sa.Column("sha256", sa.String(64), nullable=False),
                    sa.Column("input_shapes", sa.JSON, nullable=False),
                    sa.Column("created_at", sa.DateTime, nullable=False),
                    sa.UniqueConstraint("sha256", "name", name="uq_model"))
    op.create_table("targets",
                    sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("canonical", sa.String(1024), nullable=False, unique=True),
                    sa.Column("host_features", sa.Text, nullable=False))
    op.create_table("workloads",
                    sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("structural_hash", sa.String(32), nullable=False, index=True),
                    sa.Column("content_sha256", sa.String(64), nullable=False, index=True),
                    sa.Column("workload_json", sa.Text, nullable=False),
                    sa.Column("tir_text", sa.Text, nullable=False))
    op.create_table("jobs",
                    sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
                    sa.Column("target_id", sa.Integer, sa.ForeignKey("targets.id"), nullable=False),
                    sa.Column("resume_key", sa.String(64), nullable=False, index=True),
                    sa.Column("status", sa.String(16), nullable=False),
                    sa.Column("budget_trials", sa.Integer),
                    sa.Column("budget_seconds", sa.Float),
                    sa.Column("host", sa.String(256), nullable=False),
                    sa.Column("versions", sa.JSON, nullable=False),
                    sa.Column("started_at", sa.DateTime, nullable=False),
                    sa.Column("finished_at", sa.DateTime),
                    sa.Column("tuning_seconds", sa.Float, nullable=False))
    op.create_table("tuning_records",
                    sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id")),
                    sa.Column("workload_id", sa.Integer, sa.ForeignKey("workloads.id"), nullable=False),
                    sa.Column("target_id", sa.Integer, sa.ForeignKey("targets.id"), nullable=False),
                    sa.Column("record_json", sa.Text, nullable=False),
                    sa.Column("latency_s", sa.Float),
                    sa.Column("error_kind", sa.String(16)),
                    sa.Column("error_msg", sa.Text),
                    sa.Column("provenance", sa.String(64), nullable=False),
                    sa.Column("measured_at", sa.DateTime, nullable=False))
    op.create_index("ix_records_best", "tuning_records", ["workload_id", "target_id", "latency_s"])
    op.create_table("artifact_records",
                    sa.Column("artifact_id", sa.Integer, sa.ForeignKey("artifacts.id"), primary_key=True),
                    sa.Column("record_id", sa.Integer, sa.ForeignKey("tuning_records.id"), primary_key=True))


def downgrade() -> None:
    for table in ("artifact_records", "tuning_records", "jobs", "workloads", "targets", "models",
                  "artifacts"):
        op.drop_table(table)
