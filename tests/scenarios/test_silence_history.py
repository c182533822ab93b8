"""Dead air in the history database: a real daemon plays real music with silence in the middle,
the recorder (in process, over real ZeroMQ) stores its silence messages in SQLite, and the
span reads back from the ``silences`` table as docs/history.md says."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from support.helpers import make_config, started, tiny_model_file, wait_until

from streamtag.audio.files import write_audio
from streamtag.daemon.config import SourceConfig, with_overrides
from streamtag.history import schema
from streamtag.history.recorder import Recorder
from tests.engine.test_health import HOP_S, RATE, music_with_a_gap


def record_file(path, tmp_path, thresholds: tuple[float, ...] | None = None, *,
                window: int = 128, hop: int = 32, title: str | None = None,
                loudness: bool = False) -> sa.Engine:
    """Plays ``path`` as stream "radio" of a real daemon (the tiny model at ``thresholds``;
    ``title`` overrides the file's; ``loudness``: [health] loudness) and records what it
    publishes, over real ZeroMQ, into a new SQLite file until the stream's end is stored;
    returns the database's engine (disposed by the caller)."""
    model = tiny_model_file(tmp_path / "tiny.pt", window=window, hop=hop, thresholds=thresholds)
    engine = schema.create_db_engine(f"sqlite:///{tmp_path / 'tags.db'}")
    schema.upgrade(engine)
    daemon, sub = started(with_overrides(make_config(model, tmp_path), loudness=loudness))
    sub.close()
    recorder = Recorder(engine, daemon.publisher.endpoint).start()
    try:
        wait_until(lambda: recorder.stats.received["heartbeat"] > 0, 10,
                   "the recorder to hear the daemon")
        daemon.add_source(SourceConfig("radio", f"file:{path}", title=title))

        def ended() -> bool:
            with engine.connect() as conn:
                return conn.execute(sa.select(sa.func.count()).select_from(schema.statuses)
                                    .where(schema.statuses.c.state == "ended")).scalar() == 1
        wait_until(ended, 60, "the stream's end to be stored")
        assert recorder.stop()
    finally:
        daemon.stop()
    return engine


def test_recorded_silence_reads_back_as_a_span(tmp_path):
    path = tmp_path / "gap.flac"
    write_audio(path, music_with_a_gap(10, 15, 10), RATE)
    engine = record_file(path, tmp_path, (0.01, 0.01, 0.01, 0.01))
    s = schema.silences
    with engine.connect() as conn:
        rows = conn.execute(sa.select(s).order_by(s.c.seq)).all()
        # The way docs/history.md tells to read spans: each "off" row is one whole span.
        spans = conn.execute(sa.select(s.c.stream, s.c.start_s, s.c.time_s)
                             .where(s.c.state == "off")).all()
        tags_on_inside = conn.execute(sa.select(sa.func.count()).select_from(schema.events).where(
            schema.events.c.state == "on", schema.events.c.time_s > spans[0].start_s,
            schema.events.c.time_s < spans[0].time_s)).scalar()
    engine.dispose()
    assert [(r.stream, r.state) for r in rows] == [("radio", "on"), ("radio", "off")]
    on, off = rows
    assert on.time_s == on.start_s and on.sample == on.start_sample
    assert on.duration_s >= 10.0 and on.threshold_dbfs == -50.0
    assert off.start_s == on.start_s and off.duration_s == pytest.approx(off.time_s - off.start_s)
    ((stream, start_s, end_s),) = spans
    assert stream == "radio"
    assert 10.0 - 0.05 <= start_s <= 10.0 + HOP_S + 0.05
    assert 25.0 - HOP_S - 0.05 <= end_s <= 25.0 + 0.05
    assert tags_on_inside == 0
