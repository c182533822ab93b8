"""The as-run log shows a track as its headline (streamtag.engine.tracks.headline_tags): a
recorded track message whose `active` names a rock genre beside a piano that was on for most of
it, and rock itself never, is listed with the piano alone; the message is stored as sent."""

from __future__ import annotations

import json
import time

import sqlalchemy as sa
from support.history_station import RATE, history, record

from streamtag.history import schema
from streamtag.wire.protocol import StatusBody, TrackBody

MODEL = {"name": "music", "hash": "sha256:4567cdef"}
TAGS = ("rock", "indie", "piano", "instrumental")


def test_the_as_run_log_leaves_out_a_rock_genre_a_piano_contradicts(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'history.db'}"
    t0 = time.time() - 600

    def play(station) -> None:
        station.send("radio", StatusBody(state="running", title="Victory", source="test"), t0)
        for n, (title, share) in enumerate((("Victory", (0.0, 1.0, 0.75, 0.6)),
                                            ("Battle", (0.9, 1.0, 0.3, 0.6)))):
            start = n * 60.0
            station.send("radio", TrackBody(
                title=title, reason="title_change", start_s=start, end_s=start + 60.0,
                start_sample=round(start * RATE), end_sample=round((start + 60.0) * RATE),
                started_at=t0 + start, ended_at=t0 + start + 60.0, windows=58, tags=TAGS,
                mean_raw=(0.2,) * 4, mean_smoothed=(0.2,) * 4, active_share=share,
                active=tuple(t for t, s in zip(TAGS, share, strict=True) if s > 0.5),
                model=MODEL), t0 + start + 60.0)

    record(url, play)
    result = history(capsys, "--db", url, "--json", "--tz", "UTC")
    assert result.returncode == 0, result.stderr
    entries = {e["title"]: e for e in json.loads(result.stdout)["asrun"]}
    # indie on in every window beside the piano in three quarters, rock never: the piano
    assert entries["Victory"]["active"] == ["piano", "instrumental"]
    # rock itself on: a rock track with a piano keeps its genres
    assert entries["Battle"]["active"] == ["rock", "indie", "instrumental"]
    engine = schema.create_db_engine(url)
    try:
        with engine.connect() as conn:
            stored = [row.active for row in conn.execute(
                sa.select(schema.tracks.c.active).order_by(schema.tracks.c.start_sample))]
    finally:
        engine.dispose()
    assert [schema.unpack_names(a) for a in stored][0] == ["indie", "piano", "instrumental"]
