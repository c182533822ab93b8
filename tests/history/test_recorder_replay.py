"""The recorder with a daemon's replay socket: stopped for two seconds and started again, it
stores what was published meanwhile instead of a gap (a real daemon on 127.0.0.1, a real model
file, SQLite files). A recorder beside it without the replay socket stores the gap, so the loss
was real."""

from __future__ import annotations

import dataclasses
import time

from support.helpers import free_port, make_config, wait_until
from support.history_station import stored_keys, table_rows

from streamtag.daemon.config import SourceConfig
from streamtag.daemon.daemon import Daemon
from streamtag.history import schema
from streamtag.history.recorder import Recorder

PAUSE_S = 2.0


def _database(tmp_path, name: str):
    engine = schema.create_db_engine(f"sqlite:///{tmp_path / name}")
    schema.upgrade(engine)
    return engine


def _stored(engine, msg_type: str, stream: str) -> list[int]:
    return sorted(seq for (kind, s, _, seq) in stored_keys(engine) if (kind, s) == (msg_type,
                                                                                    stream))


def test_a_recorder_stopped_for_two_seconds_stores_no_gap(model_path, audio_files, tmp_path):
    config = make_config(model_path, tmp_path)
    config = dataclasses.replace(config, publish=dataclasses.replace(
        config.publish, replay_endpoint=f"tcp://127.0.0.1:{free_port()}"))
    daemon = Daemon(config).start()
    engines = {"replay": _database(tmp_path, "replay.db"), "plain": _database(tmp_path, "plain.db")}
    options = {"replay": {"replay": [daemon.replay.endpoint]}, "plain": {}}

    def recorders() -> dict[str, Recorder]:
        return {name: Recorder(engine, daemon.publisher.endpoint, max_block_age_s=0.2,
                               **options[name]).start() for name, engine in engines.items()}

    running = recorders()
    try:
        daemon.add_source(SourceConfig("a", f"file:{audio_files['a']}",
                                       {"realtime": True, "loop": True}))
        for engine in engines.values():
            wait_until(lambda e=engine: len(_stored(e, "scores", "a")) >= 3, 30,
                       "windows stored")
        for recorder in running.values():
            assert recorder.stop()
        stopped_at = daemon.publisher.next_seq("scores", "a")
        time.sleep(PAUSE_S)
        assert daemon.publisher.next_seq("scores", "a") > stopped_at  # published meanwhile
        running = recorders()
        # each restarted recorder hears the feed again (a subscriber joins a moment after it
        # connects) before the stream ends, so its last window reaches both
        resumed_at = daemon.publisher.next_seq("scores", "a")
        for engine in engines.values():
            wait_until(lambda e=engine: _stored(e, "scores", "a")[-1:] >= [resumed_at], 30,
                       "the restarted recorders storing live windows")
        daemon.remove_source("a")
        wait_until(daemon.idle, 30, "the stream to end")
        last = daemon.publisher.next_seq("scores", "a") - 1
        for engine in engines.values():
            wait_until(lambda e=engine: _stored(e, "scores", "a")[-1:] == [last]
                       and _stored(e, "status", "a")[-1:] != [], 30,
                       "the stream's last window stored")
    finally:
        for recorder in running.values():
            recorder.stop()
        daemon.stop()
    replayed = _stored(engines["replay"], "scores", "a")
    assert replayed == list(range(replayed[0], last + 1))  # every window, none missing
    assert table_rows(engines["replay"], schema.gaps) == [], vars(running["replay"].stats)
    assert running["replay"].stats.gaps == 0
    plain_gaps = [g for g in table_rows(engines["plain"], schema.gaps)
                  if (g.stream, g.msg_type) == ("a", "scores")]
    assert plain_gaps and plain_gaps[0].cause == "seq"  # the same two seconds, lost
    for engine in engines.values():
        engine.dispose()
