"""The dashboard started before the recorder: with a history database URL whose database does
not exist yet (or holds no history yet), it starts, its history view says it waits, and it
answers from the database once the recorder made it."""

from __future__ import annotations

import sqlite3

import pytest

pytest.importorskip("websockets", reason="the dashboard needs websockets: pip install websockets")

from support.helpers import free_port  # noqa: E402

from streamtag.history import schema  # noqa: E402
from tests.web.test_history import get_json  # noqa: E402
from tests.web.test_server import DashboardThread  # noqa: E402


def test_the_dashboard_waits_for_the_recorder_s_database(tmp_path, closing):
    path = tmp_path / "tags.db"
    url = f"sqlite:///{path}"
    dashboard = DashboardThread(f"tcp://127.0.0.1:{free_port()}", db=url)
    closing.append(dashboard)
    status, answer = get_json(dashboard.url + "history.json?minutes=10")
    assert status == 503 and "waiting" in answer["error"] and str(path) in answer["error"]
    assert not path.exists()  # a reader makes no file where the recorder will
    sqlite3.connect(path).close()  # made, not yet written
    status, answer = get_json(dashboard.url + "history.json?minutes=10")
    assert status == 503 and "holds no streamtag history yet" in answer["error"], answer
    engine = schema.create_db_engine(url)
    schema.upgrade(engine)  # as the recorder does when it starts
    engine.dispose()
    status, answer = get_json(dashboard.url + "history.json?minutes=10")
    assert status == 200 and answer["streams"] == {}, answer
