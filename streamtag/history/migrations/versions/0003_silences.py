"""Silence (dead air) messages of protocol 1.2: one row per "on" and "off" (docs/history.md,
``silences``).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")  # SQLite autoincrements INTEGER keys


def upgrade():
    op.create_table(
        "silences",
        sa.Column("id", ROW_ID, primary_key=True),
        sa.Column("stream", sa.String(128), nullable=False),
        sa.Column("session", sa.String(128), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("sent_at", sa.Float, nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("time_s", sa.Float, nullable=False),
        sa.Column("sample", sa.BigInteger, nullable=False),
        sa.Column("start_s", sa.Float, nullable=False),
        sa.Column("start_sample", sa.BigInteger, nullable=False),
        sa.Column("duration_s", sa.Float, nullable=False),
        sa.Column("threshold_dbfs", sa.Float, nullable=False),
        sa.Column("cause", sa.String(16), nullable=False, server_default="silence"),
        sa.UniqueConstraint("stream", "session", "seq", name="uq_silences"))
    op.create_index("ix_silences_stream_sent_at", "silences", ["stream", "sent_at"])


def downgrade():
    op.drop_index("ix_silences_stream_sent_at", table_name="silences")
    op.drop_table("silences")
