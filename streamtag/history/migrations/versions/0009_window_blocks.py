"""Windows packed per stream and minute: the `window_blocks` and `window_rollups` tables; every
`scores` row moves into them (a stream's windows read in batches, packed as the recorder packs
them), and `scores` goes. Like every revision, one transaction: an upgrade killed midway leaves
the database at 0008 with its `scores`, and the next upgrade starts again.

Revision ID: 0009
Revises: 0008
"""

import json

import sqlalchemy as sa
from alembic import op

from streamtag.history import blocks, schema

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BATCH_WINDOWS = 20_000  # windows read at a time


def _id() -> sa.Column:
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)


def _keys() -> list[sa.Column]:
    return [sa.Column("session_id", sa.Integer, sa.ForeignKey("sessions.id"), nullable=False),
            sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
            sa.Column("first_seq", sa.BigInteger, nullable=False)]


def upgrade():
    op.create_table(
        "window_blocks", _id(), *_keys(),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("windows", sa.Integer, nullable=False),
        sa.Column("first_sent_at", sa.Float, nullable=False),
        sa.Column("last_sent_at", sa.Float, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("session_id", "first_seq", name="uq_window_blocks"))
    op.create_index("ix_window_blocks_first_sent_at", "window_blocks", ["first_sent_at"])
    op.create_table(
        "window_rollups", _id(), *_keys(),
        sa.Column("minute_at", sa.Float, nullable=False),
        sa.Column("windows", sa.Integer, nullable=False),
        sa.Column("first_sent_at", sa.Float, nullable=False),
        sa.Column("last_sent_at", sa.Float, nullable=False),
        sa.Column("mean_smoothed", sa.LargeBinary, nullable=False),
        sa.Column("active_windows", sa.LargeBinary, nullable=False),
        sa.Column("rms_dbfs", sa.Float),
        sa.Column("peak_dbfs", sa.Float),
        sa.Column("short_term_lufs", sa.Float),
        sa.Column("content", sa.Text),
        sa.UniqueConstraint("session_id", "first_seq", name="uq_window_rollups"))
    op.create_index("ix_window_rollups_minute_at", "window_rollups", ["minute_at"])
    move(op.get_bind())
    op.drop_index("ix_scores_stream_sent_at", table_name="scores")
    op.drop_table("scores")


def move(conn: sa.Connection) -> None:
    """Every `scores` row into blocks and rollups, one stream and session at a time, in
    batches of BATCH_WINDOWS."""
    sc, ses = schema.legacy_scores.c, schema.sessions.c
    tags = {row.id: json.loads(row.tags)
            for row in conn.execute(sa.select(schema.models.c.id, schema.models.c.tags))}
    pairs = conn.execute(sa.select(sc.stream, sc.session, sa.func.min(sc.sent_at).label("at"))
                         .group_by(sc.stream, sc.session)).all()
    for pair in pairs:
        session_id = conn.execute(sa.select(ses.id).where(
            ses.stream == pair.stream, ses.session == pair.session)).scalar()
        if session_id is None:  # written by hand or by a recorder that lost its row
            session_id = conn.execute(schema.sessions.insert().values(
                stream=pair.stream, session=pair.session, first_sent_at=pair.at,
                previous_session=None, restarted=False)).inserted_primary_key[0]  # type: ignore[index]
        store = blocks.OpenBlocks(1)
        last = None
        while True:
            rows = conn.execute(sa.select(schema.legacy_scores).where(
                sc.stream == pair.stream, sc.session == pair.session,
                *([sc.seq > last] if last is not None else []))
                .order_by(sc.seq).limit(BATCH_WINDOWS)).all()
            if not rows:
                break
            last = rows[-1].seq
            closed = []
            for row in rows:
                window = blocks.Window(
                    seq=row.seq, sent_at=row.sent_at, start_s=row.start_s, end_s=row.end_s,
                    start_sample=row.start_sample, end_sample=row.end_sample,
                    raw=schema.unpack_scores(row.raw), smoothed=schema.unpack_scores(row.smoothed),
                    active=row.active, latency_ms=row.latency_ms,
                    **{name: getattr(row, name) for name in (
                        "rms_dbfs", "peak_dbfs", "clipped", "onset_rate_hz", "energy", "mood",
                        "valence", "arousal", "momentary_lufs", "short_term_lufs", "content")})
                # the minute of its window, whatever the wall clock says now
                closed += store.add(pair.stream, pair.session, row.model_id,
                                    tags[row.model_id], window, 0.0)
            _write(conn, closed, session_id)
        _write(conn, store.close_all(), session_id)


def _write(conn: sa.Connection, closed: list, session_id: int) -> None:
    if not closed:
        return
    block_rows, rollup_rows = [], []
    for block in closed:
        block_row, rollup_row = block.rows()
        block_rows.append({**block_row, "session_id": session_id})
        rollup_rows.append({**rollup_row, "session_id": session_id})
    conn.execute(schema.window_blocks.insert(), block_rows)
    conn.execute(schema.window_rollups.insert(), rollup_rows)


def downgrade():
    raise NotImplementedError("revision 0009 packs windows into blocks; going back would "
                              "unpack them at their stored precision: restore a backup "
                              "instead")
