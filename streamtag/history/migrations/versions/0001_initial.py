"""The first history schema: models, scores, events, statuses, tracks, sessions, gaps,
daemons and snapshots (docs/history.md).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")  # SQLite autoincrements INTEGER keys


def _message_columns():
    return [sa.Column("id", ROW_ID, primary_key=True),
            sa.Column("stream", sa.String(128), nullable=False),
            sa.Column("session", sa.String(128), nullable=False),
            sa.Column("seq", sa.BigInteger, nullable=False),
            sa.Column("sent_at", sa.Float, nullable=False)]


def upgrade():
    op.create_table(
        "models",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("hash", sa.Text, nullable=False),
        sa.Column("tags", sa.Text, nullable=False),
        sa.UniqueConstraint("name", "hash", "tags", name="uq_models"))
    op.create_table(
        "scores", *_message_columns(),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("start_s", sa.Float, nullable=False),
        sa.Column("end_s", sa.Float, nullable=False),
        sa.Column("start_sample", sa.BigInteger, nullable=False),
        sa.Column("end_sample", sa.BigInteger, nullable=False),
        sa.Column("raw", sa.LargeBinary, nullable=False),
        sa.Column("smoothed", sa.LargeBinary, nullable=False),
        sa.Column("active", sa.Text, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.UniqueConstraint("stream", "session", "seq", name="uq_scores"))
    op.create_index("ix_scores_stream_sent_at", "scores", ["stream", "sent_at"])
    op.create_table(
        "events", *_message_columns(),
        sa.Column("tag", sa.Text, nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("time_s", sa.Float, nullable=False),
        sa.Column("sample", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("stream", "session", "seq", name="uq_events"))
    op.create_index("ix_events_stream_sent_at", "events", ["stream", "sent_at"])
    op.create_table(
        "statuses", *_message_columns(),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("title", sa.Text),
        sa.Column("source", sa.Text),
        sa.Column("counters", sa.Text, nullable=False),
        sa.UniqueConstraint("stream", "session", "seq", name="uq_statuses"))
    op.create_index("ix_statuses_stream_sent_at", "statuses", ["stream", "sent_at"])
    op.create_table(
        "tracks", *_message_columns(),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("title", sa.Text),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("start_s", sa.Float, nullable=False),
        sa.Column("end_s", sa.Float, nullable=False),
        sa.Column("start_sample", sa.BigInteger, nullable=False),
        sa.Column("end_sample", sa.BigInteger, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float, nullable=False),
        sa.Column("windows", sa.BigInteger, nullable=False),
        sa.Column("mean_raw", sa.LargeBinary, nullable=False),
        sa.Column("mean_smoothed", sa.LargeBinary, nullable=False),
        sa.Column("active_share", sa.LargeBinary, nullable=False),
        sa.Column("active", sa.Text, nullable=False),
        sa.UniqueConstraint("stream", "session", "seq", name="uq_tracks"))
    op.create_index("ix_tracks_stream_started_at", "tracks", ["stream", "started_at"])
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("stream", sa.String(128), nullable=False),
        sa.Column("session", sa.String(128), nullable=False),
        sa.Column("first_sent_at", sa.Float, nullable=False),
        sa.Column("previous_session", sa.String(128)),
        sa.Column("restarted", sa.Boolean, nullable=False),
        sa.UniqueConstraint("stream", "session", name="uq_sessions"))
    op.create_table(
        "gaps",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("stream", sa.String(128), nullable=False),
        sa.Column("session", sa.String(128), nullable=False),
        sa.Column("msg_type", sa.String(16), nullable=False),
        sa.Column("first_seq", sa.BigInteger, nullable=False),
        sa.Column("missed", sa.BigInteger, nullable=False),
        sa.Column("cause", sa.String(16), nullable=False),
        sa.Column("detected_at", sa.Float, nullable=False),
        sa.UniqueConstraint("stream", "session", "msg_type", "first_seq", "cause",
                            name="uq_gaps"))
    op.create_index("ix_gaps_stream_detected_at", "gaps", ["stream", "detected_at"])
    op.create_table(
        "daemons",
        sa.Column("session", sa.String(128), primary_key=True),
        sa.Column("first_sent_at", sa.Float, nullable=False),
        sa.Column("last_sent_at", sa.Float, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("uptime_s", sa.Float, nullable=False),
        sa.Column("streams", sa.Integer, nullable=False))
    op.create_table(
        "snapshots",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("taken_at", sa.Float, nullable=False),
        sa.Column("control", sa.Text, nullable=False),
        sa.Column("session", sa.String(128), nullable=False),
        sa.Column("stream", sa.String(128), nullable=False),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("smoothed", sa.LargeBinary, nullable=False),
        sa.Column("active", sa.Text, nullable=False),
        sa.Column("windows", sa.BigInteger, nullable=False))


def downgrade():
    for table in ("snapshots", "daemons", "gaps", "sessions", "tracks", "statuses", "events",
                  "scores", "models"):
        op.drop_table(table)
