"""Fixtures the history tests share."""

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A new, empty database: an SQLite file, then one on the module's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tags.db'}"
    return request.getfixturevalue("postgres").new_database()
