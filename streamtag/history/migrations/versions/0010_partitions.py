"""PostgreSQL: `window_blocks` partitioned by day of `first_sent_at` and `window_rollups` by
month of `minute_at` (history.partitions), their rows moved into the partitions of their days
and months; both databases: an index on window_rollups (session_id, minute_at), which reports
of one stream's rollups read by. Like every revision, one transaction: an upgrade killed midway
leaves the tables as they were, and the next upgrade starts again.

Revision ID: 0010
Revises: 0009
"""

import time

from alembic import op

from streamtag.history import partitions

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# (scheme, constraints and indexes other than the primary key, as 0009 made them)
TABLES = (
    (partitions.BLOCKS, "uq_window_blocks", ("session_id", "first_seq"),
     {"ix_window_blocks_first_sent_at": ("first_sent_at",)}),
    (partitions.ROLLUPS, "uq_window_rollups", ("session_id", "first_seq"),
     {"ix_window_rollups_minute_at": ("minute_at",)}),
)
OLDEST_S = 10 * 366 * partitions.DAY_S  # rows older than this before now wait in the default


def upgrade():
    conn = op.get_bind()
    if partitions.partitioned(conn):
        now = time.time()
        for scheme, unique, unique_columns, indexes in TABLES:
            _partition(conn, scheme, unique, unique_columns, indexes, now)
    op.create_index("ix_window_rollups_session_minute", "window_rollups",
                    ["session_id", "minute_at"])


def _partition(conn, scheme, unique, unique_columns, indexes, now) -> None:
    """The table again, partitioned, with every row moved into it: the old table renamed
    aside (with its constraints' and indexes' names), its id sequence kept."""
    table, key, old = scheme.table, scheme.column, f"{scheme.table}_unpartitioned"
    run = conn.exec_driver_sql
    run(f"ALTER TABLE {table} RENAME TO {old}")
    run(f"ALTER TABLE {old} RENAME CONSTRAINT {table}_pkey TO {old}_pkey")
    run(f"ALTER TABLE {old} RENAME CONSTRAINT {unique} TO {unique}_unpartitioned")
    for index in indexes:
        run(f"ALTER INDEX {index} RENAME TO {index}_unpartitioned")
    run(f"ALTER SEQUENCE {table}_id_seq OWNED BY NONE")
    run(f"CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS) PARTITION BY RANGE ({key})")
    run(f"ALTER SEQUENCE {table}_id_seq OWNED BY {table}.id")
    # a partitioned table's keys hold its partition column
    run(f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY (id, {key})")
    run(f"ALTER TABLE {table} ADD CONSTRAINT {unique} UNIQUE "
        f"({', '.join(unique_columns)}, {key})")
    for column, parent in (("session_id", "sessions"), ("model_id", "models")):
        run(f"ALTER TABLE {table} ADD CONSTRAINT {table}_{column}_fkey FOREIGN KEY ({column}) "
            f"REFERENCES {parent} (id)")
    for index, columns in indexes.items():
        run(f"CREATE INDEX {index} ON {table} ({', '.join(columns)})")
    partitions.create_default(conn, scheme)
    days = conn.exec_driver_sql(
        f"SELECT DISTINCT floor({key} / {partitions.DAY_S!r}) * {partitions.DAY_S!r} "
        f"FROM {old} WHERE {key} >= {now - OLDEST_S!r} "
        f"AND {key} < {now + partitions.AHEAD_DAYS * partitions.DAY_S!r}").scalars().all()
    starts = {scheme.start(day) for day in days}
    starts |= set(scheme.starts(now, now + partitions.AHEAD_DAYS * partitions.DAY_S))
    for start in sorted(starts):
        partitions.create(conn, scheme, start)
    columns = ", ".join(c for c in conn.exec_driver_sql(
        "SELECT attname FROM pg_attribute WHERE attrelid = CAST(%(t)s AS regclass) "
        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum", {"t": old}).scalars())
    run(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {old}")
    run(f"DROP TABLE {old}")


def downgrade():
    raise NotImplementedError("revision 0010 partitions windows and rollups; going back "
                              "would copy them into plain tables: restore a backup instead")
