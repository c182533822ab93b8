"""Many rows into one table at once, for the recorder's batches.

SQLAlchemy's executemany handles each row's parameters in Python, which costs more than the
database's own work on a recorder's small rows. Here rows go as plain tuples: SQLite takes them
through the DB-API's executemany; PostgreSQL (psycopg 3) through COPY into a temporary table and
one INSERT … SELECT, which keeps ON CONFLICT DO NOTHING (COPY itself has no conflict clause)
and assigns ids in the order of the rows. Errors come out as SQLAlchemy's exceptions, as from
``Connection.execute``, and a connection the error showed lost is invalidated.
"""

from __future__ import annotations

import operator
import zlib
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite


def insert_rows(conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]], *,
                skip_conflicts: bool) -> None:
    """Insert ``rows`` (dicts of column values, all with the same keys) into ``table``;
    ``skip_conflicts``: ON CONFLICT DO NOTHING, for a table with a natural key."""
    if not rows:
        return
    keys = rows[0].keys()
    if len(keys) < 2 or any(row.keys() != keys for row in rows):  # SQLAlchemy's way
        conn.execute(_insert(conn, table, skip_conflicts), list(rows))
        return
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg" \
            and _may_stage(conn):
        _copy_rows(conn, table, list(keys), rows, skip_conflicts)
        return
    # the dialect's own SQL with positional parameters, compiled once per call
    compiled = _insert(conn, table, skip_conflicts).compile(dialect=conn.dialect,
                                                             column_keys=list(keys))
    positions = compiled.positiontup
    if positions is None or set(positions) != set(keys):  # named parameters: SQLAlchemy's way
        conn.execute(_insert(conn, table, skip_conflicts), list(rows))
        return
    values = operator.itemgetter(*positions)
    conn.exec_driver_sql(str(compiled), [values(row) for row in rows])


def _insert(conn: sa.Connection, table: sa.Table, skip_conflicts: bool):
    statement = (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)
    return statement.on_conflict_do_nothing() if skip_conflicts else statement


def _may_stage(conn: sa.Connection) -> bool:
    """Whether this login may create the temporary staging tables (a database can refuse
    TEMPORARY to PUBLIC): asked once per connection; without it, rows go by executemany."""
    info = conn.connection.info
    if _MAY_STAGE not in info:
        info[_MAY_STAGE] = bool(conn.exec_driver_sql(
            "SELECT has_database_privilege(current_database(), 'TEMPORARY')").scalar())
    return info[_MAY_STAGE]


_MAY_STAGE = "may_stage_for_copy"  # a key of the connection's info


def _copy_rows(conn: sa.Connection, table: sa.Table, columns: list[str],
               rows: Sequence[dict[str, Any]], skip_conflicts: bool) -> None:
    quote = conn.dialect.identifier_preparer.quote
    target = conn.dialect.identifier_preparer.format_table(table)
    names = ", ".join(quote(c) for c in columns)
    # a staging table of exactly these columns (a name per set of them), without the
    # target's constraints; its "position" column makes ids follow the rows' order
    shape = zlib.crc32("\0".join(columns).encode())
    staging = quote(f"streamtag_bulk_{table.name}_{shape:08x}")
    statements = [
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS AS "
        f"SELECT {names}, 0::bigint AS position FROM {target} WITH NO DATA",
        f"COPY {staging} ({names}, position) FROM STDIN",
        f"INSERT INTO {target} ({names}) SELECT {names} FROM {staging} ORDER BY position"
        + (" ON CONFLICT DO NOTHING" if skip_conflicts else ""),
        f"TRUNCATE {staging}"]
    raw = conn.connection.dbapi_connection
    assert raw is not None  # a Connection's own DBAPI connection while it is open
    cursor = raw.cursor()
    statement = statements[0]
    try:
        cursor.execute(statement)  # after the first batch, a notice that it exists
        statement = statements[1]
        with cursor.copy(statement) as copy:
            values = operator.itemgetter(*columns)
            for position, row in enumerate(rows):
                copy.write_row((*values(row), position))
        for statement in statements[2:]:
            cursor.execute(statement)
    except conn.dialect.loaded_dbapi.Error as exc:
        lost = conn.dialect.is_disconnect(exc, raw, cursor)
        if lost:
            conn.invalidate(exc)
        raise sa.exc.DBAPIError.instance(statement, None, exc, conn.dialect.loaded_dbapi.Error,
                                         connection_invalidated=lost,
                                         dialect=conn.dialect) from exc
    finally:
        cursor.close()
