"""Outages as a daemon really reports them, read back by `streamtag history`: the daemon
stopped while its station was off air (it scores the audio it had left as it stops: that
window is not audio received then), a daemon killed while off air and started again, a
station that came on air after the daemon started, audio back while the recorder was away (no
"running" status recorded, windows lost). Each outage is dated from the last audio received to
the audio back or the end of monitoring, the tracks end and start where their audio did, and
the data lost is the span of the windows lost. Real Publisher, recorder and SQLite file."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from support.history_station import MODEL, RATE, TAGS, WINDOW_S, history, record

from streamtag.history.asrun import Entry, Span, clip_to_air, merge_restarts
from streamtag.history.plot import hold_short_gaps
from streamtag.wire.protocol import ScoresBody, StatusBody, TrackBody, topic_for
from tests.history.test_report import restart

SOURCE = "http://127.0.0.1:8000/live.ogg"
GONE = "the station answered HTTP 404"


def status(station, stream, state, at, samples, title=None, error=None):
    station.send(stream, StatusBody(state=state, title=title, source=SOURCE, error=error,
                                    counters={"samples": samples}), at)


def window(station, stream, end_s, at, end_sample=None):
    """The window whose audio ends at `end_s` (or at `end_sample`), sent at `at`."""
    end_sample = int(end_s * RATE) if end_sample is None else end_sample
    start_s = max(0.0, end_sample / RATE - WINDOW_S)
    scores = [0.9] + [0.1] * (len(TAGS) - 1)
    station.send(stream, ScoresBody(
        start_s=start_s, end_s=end_sample / RATE, start_sample=int(start_s * RATE),
        end_sample=end_sample, tags=TAGS, raw=scores, smoothed=scores, active=[TAGS[0]],
        model=MODEL, latency_ms=1.0), at)


def track(station, stream, title, reason, started_at, ended_at, start_s, end_s, windows):
    mean = [0.9] + [0.1] * (len(TAGS) - 1)
    station.send(stream, TrackBody(
        title=title, reason=reason, start_s=float(start_s), end_s=float(end_s),
        start_sample=int(start_s * RATE), end_sample=int(end_s * RATE), started_at=started_at,
        ended_at=ended_at, windows=windows, tags=TAGS, mean_raw=mean, mean_smoothed=mean,
        active_share=[1.0] + [0.0] * (len(TAGS) - 1), active=[TAGS[0]], model=MODEL),
        ended_at)


def lose(station, stream, msg_type, n):
    """`n` messages of a type published while the recorder was away (seq moves on)."""
    topic = topic_for(msg_type, stream)
    station._seq[topic] = station._seq.get(topic, 0) + n


@pytest.fixture(scope="module")
def outages(tmp_path_factory):
    """Stream "r": A plays 60 s, the mount goes at t0+60; the daemon is stopped at t0+98
    (its last window, of the audio it had, sent then; A's track message, reason end; status
    ended). Started again at t0+103, the mount answers 404 until t0+111, when B begins; 30 s
    into B the mount goes again (t0+141) and is back at t0+171 while the recorder is away:
    neither that "running" status nor the first 10 windows after it are recorded. B ends at
    t0+201 (C's title).
    Stream "k": 60 s of audio, the mount goes at t0+60, the daemon is killed (its last status
    at t0+90) and started again at t0+103, the station back at once."""
    url = f"sqlite:///{tmp_path_factory.mktemp('outages') / 'tags.db'}"
    t0 = time.time() - 400

    def script(station):
        for stream in ("r", "k"):
            status(station, stream, "starting", t0 - 1, 0)
            status(station, stream, "running", t0, 0, title="A")
            for i in range(1, 61):
                window(station, stream, i, t0 + i)
        # r: off air from t0+60; stopped at t0+98, scoring what it had left
        for k, at in enumerate((60.2, 61.2, 63.2, 67.2, 75.2, 91.2)):
            status(station, "r", "reconnecting", t0 + at, 60 * RATE, title="A",
                   error=GONE if k else "the server ended the stream")
        window(station, "r", 60.0, t0 + 98.0, end_sample=60 * RATE)
        track(station, "r", "A", "end", t0, t0 + 98.0, 0, 60, 61)
        status(station, "r", "ended", t0 + 98.1, 60 * RATE, title="A")
        # k: off air from t0+60, killed after its status at t0+90
        for at in (60.3, 70.0, 90.0):
            status(station, "k", "reconnecting", t0 + at, 60 * RATE, title="A", error=GONE)
        restart(station)
        # r, second session: 404 until B begins at t0+111
        status(station, "r", "starting", t0 + 103.0, 0)
        status(station, "r", "reconnecting", t0 + 103.2, 0, error=GONE)
        status(station, "r", "running", t0 + 111.0, 0, title="B")
        for i in range(1, 31):
            window(station, "r", i, t0 + 111 + i)
        status(station, "r", "reconnecting", t0 + 141.1, 30 * RATE, title="B",
               error="the server ended the stream")
        # back at t0+171 with the recorder away: its status and 10 windows lost
        lose(station, "r", "status", 1)
        lose(station, "r", "scores", 10)
        for i in range(41, 61):
            window(station, "r", i, t0 + 171 + (i - 30))
        track(station, "r", "B", "title_change", t0 + 103.0, t0 + 201.0, 0, 60, 50)
        status(station, "r", "running", t0 + 201.0, 60 * RATE, title="C")
        for i in range(61, 71):
            window(station, "r", i, t0 + 201 + (i - 60))
        # k, second session: on air at once
        status(station, "k", "starting", t0 + 103.0, 0)
        status(station, "k", "running", t0 + 103.5, 0, title="D")
        for i in range(1, 31):
            window(station, "k", i, t0 + 103.5 + i)
        return t0

    return url, record(url, script)


def report(capsys, url, stream):
    result = history(capsys, "--db", url, "--json", "--stream", stream, "--events")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def spans(answer, kind, t0):
    return [(round(s["start"] - t0, 1), None if s["end"] is None else round(s["end"] - t0, 1))
            for s in answer[kind]]


def test_outages_run_from_the_last_audio_to_audio_back_or_the_end_of_monitoring(outages,
                                                                                capsys):
    url, t0 = outages
    answer = report(capsys, url, "r")
    # stopped while off air: until the daemon stopped (not "still", not from its last window);
    # 404 at start-up; the outage whose "running" status was lost ends when audio came back
    assert spans(answer, "off_air", t0) == [(60.0, 98.1), (103.2, 111.0), (141.0, 171.0)]
    # the 10 windows lost were sent after the audio came back, not over the outage
    assert spans(answer, "not_recorded", t0) == [(171.0, 182.0)]
    (killed,) = report(capsys, url, "k")["off_air"]
    # killed while off air: off air until its last message, not over the restart
    assert (killed["start"] - t0, killed["end"] - t0) == (pytest.approx(60.0),
                                                          pytest.approx(90.0))


def test_tracks_end_and_start_where_their_audio_did(outages, capsys):
    url, t0 = outages
    entries = report(capsys, url, "r")["asrun"]
    got = [(e["title"], round(e["start"] - t0, 1), None if e["end"] is None
            else round(e["end"] - t0, 1), e["partial"], round(e["audio_s"])) for e in entries]
    assert got[:2] == [
        # its track message came as the daemon stopped, 38 s after its audio ended: its audio
        # ended as the station went off air, which the daemon's stop did not cut
        ("A", 0.0, 60.0, ["joined", "off air"], 60),
        # started with the daemon's session, but its audio began when the station came on
        ("B", 111.0, 201.0, ["joined", "off air"], 60)]
    # a track without a track message (its daemon killed, or still playing): its audio
    # began a window's audio before its first window was sent
    (_, d) = report(capsys, url, "k")["asrun"]
    assert (d["title"], d["start"] - t0, d["partial"]) == ("D", pytest.approx(103.5),
                                                           ["joined", "cut"])
    text = history(capsys, "--db", url, "--stream", "r", "--since", str(t0 - 5)).stdout
    (b_line,) = [line for line in text.splitlines() if "  B  " in line]
    assert "1:30  B" in b_line and "heard 1:00" in b_line  # 30 s of it off air


def test_clip_to_air_by_sample_and_by_time():
    outage = Span("r", "off_air", 100.0, 140.0, session="s", sample=1600)
    ended = Entry("r", "A", 40.0, 150.0, 60.0, 60, [], [], session="s", start_sample=0,
                  end_sample=1600)
    clip_to_air(ended, outage)
    assert (ended.start, ended.end) == (40.0, 100.0)
    # audio after the outage in it: it played on, nothing moves
    through = Entry("r", "B", 40.0, 200.0, 120.0, 120, [], [], session="s", start_sample=0,
                    end_sample=3200)
    clip_to_air(through, outage)
    assert (through.start, through.end) == (40.0, 200.0)
    # its audio begins where the outage's ends
    late = Entry("r", "C", 90.0, 200.0, 60.0, 60, [], [], session="s", start_sample=1600,
                 end_sample=2600)
    clip_to_air(late, outage)
    assert (late.start, late.end) == (140.0, 200.0)
    # no sample count (another session, an older daemon): the end by time, only where the
    # outage lasts past it
    other = Entry("r", "D", 40.0, 150.0, 60.0, 60, [], [], session="t")
    clip_to_air(other, outage)
    assert other.end == 150.0
    other.end = 130.0
    clip_to_air(other, outage)
    assert other.end == 100.0
    elsewhere = Entry("x", "E", 40.0, 130.0, 60.0, 60, [], [])
    clip_to_air(elsewhere, outage)
    assert elsewhere.end == 130.0


def test_a_play_joined_over_a_restart_keeps_the_second_parts_cut():
    first = Entry("r", "Y", 0.0, 50.0, 50.0, 50, [], [], partial=["cut"], session="a")
    second = Entry("r", "Y", 55.0, 80.0, 25.0, 25, [], [], partial=["joined", "cut"],
                   session="b")
    (one,) = merge_restarts([first, second])
    assert one.partial == ["restart", "cut"] and (one.start, one.end) == (0.0, 80.0)


def test_short_runs_of_empty_bins_hold_the_bin_before():
    # windows in pairs every 2 s seen in 1-s bins: every other bin empty
    counts = np.array([0, 2, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, 0])
    share = np.where(counts > 0, 1.0, np.nan)[None, :] * np.array([[1.0], [0.5]])
    held = hold_short_gaps(counts, share, 1.0, 5.0)
    # edges stay empty; one empty bin between two is held; 7 empty seconds are a gap
    assert np.isnan(held[:, 0]).all() and np.isnan(held[:, 12]).all()
    assert held[:, 2].tolist() == [1.0, 0.5]
    assert np.isnan(held[:, 4:11]).all()
    assert hold_short_gaps(counts, share, 1.0, 7.0)[:, 4:11].tolist() == [[1.0] * 7,
                                                                           [0.5] * 7]
