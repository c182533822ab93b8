"""The recorder's batch inserts into PostgreSQL: COPY through a temporary staging table where
the login may create one, plain inserts where the database refuses it TEMPORARY."""

from __future__ import annotations

import sqlalchemy as sa
from support.history_station import keys, record, stored_keys

from streamtag.history import schema


def test_a_login_without_temporary_tables_records_everything(postgres):
    """A database that refuses TEMPORARY to PUBLIC (a locked-down server): the recorder's
    login cannot stage rows for COPY, and every message is stored all the same."""
    owner_url = postgres.new_database()
    name = owner_url.rsplit("/", 1)[1]
    owner = schema.create_db_engine(owner_url)
    schema.upgrade(owner)
    with owner.begin() as conn:
        conn.execute(sa.text(f"CREATE ROLE writer_{name} LOGIN"))
        conn.execute(sa.text(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO writer_{name}"))
        conn.execute(sa.text(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO writer_{name}"))
        conn.execute(sa.text(f"REVOKE TEMPORARY ON DATABASE {name} FROM PUBLIC"))
    writer_url = owner_url.replace("//streamtag@", f"//writer_{name}@")
    try:
        writer = schema.create_db_engine(writer_url)
        with writer.connect() as conn:
            assert not conn.execute(sa.text(
                "SELECT has_database_privilege(current_database(), 'TEMPORARY')")).scalar()
        writer.dispose()

        def play(station):
            for stream in ("radio-a", "radio-b"):
                station.play(stream, range(0, 30))
            return list(station.sent)

        sent = record(writer_url, play)
        assert stored_keys(owner) == keys(sent)
    finally:
        owner.dispose()
