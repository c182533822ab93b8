"""What the recorder stores of each message (history.rows): pure functions of real decoded
messages, the same wire bytes a daemon sends; and the decoder's short way for scores frames,
which must give what the full decode gives."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamtag.history import blocks, rows
from streamtag.wire.protocol import (
    AudioLevel,
    Decoder,
    EventBody,
    HeartbeatBody,
    ModelRef,
    Mood,
    ScoresBody,
    SilenceBody,
    StatusBody,
    TrackBody,
    decode,
    encode,
    make_message,
)

TAGS = ("rock", "jazz", "calm", "dark")
MODEL = ModelRef("mood", "sha256:abc")


def _wire(body, seq: int = 7, session: str = "s" * 32, stream: str = "radio-1"):
    """The message a subscriber hands on: encoded and decoded again, as off the wire."""
    return Decoder().decode(encode(make_message(body, session=session, stream=stream,
                                                seq=seq, sent_at=1_700_000_000.25)))


def _scores(**fields) -> ScoresBody:
    given = dict(start_s=3.0, end_s=6.0, start_sample=48_000, end_sample=96_000, tags=TAGS,
                 raw=[0.1, 0.9, 0.5, 0.0], smoothed=[0.2, 0.8, 0.5, 0.0], active=["jazz"],
                 model=MODEL, latency_ms=12.5)
    return ScoresBody(**{**given, **fields})


def test_a_window_keeps_what_a_block_stores_of_a_scores_message():
    message = _wire(_scores(
        audio=AudioLevel(rms_dbfs=-18.5, peak_dbfs=-3.25, clipped=2, onset_rate_hz=1.5,
                         energy=0.4, momentary_lufs=-17.0, short_term_lufs=-16.5),
        mood=Mood(words=("calm",), valence=0.25, arousal=-0.5, since_s=2.0),
        content="music"))
    body = message.body
    window = rows.window(message.header, body, rows.names(body.active),
                         rows.names(body.mood.words))
    assert (window.seq, window.sent_at, window.start_s, window.end_s) == (7, 1_700_000_000.25,
                                                                          3.0, 6.0)
    assert (window.start_sample, window.end_sample) == (48_000, 96_000)
    assert json.loads(window.active) == ["jazz"] and json.loads(window.mood) == ["calm"]
    assert (window.rms_dbfs, window.peak_dbfs, window.clipped, window.energy) == (
        -18.5, -3.25, 2, 0.4)
    assert (window.short_term_lufs, window.valence, window.arousal, window.content) == (
        -16.5, 0.25, -0.5, "music")
    # and a block of it reads back as sent
    values = blocks.decode(blocks.encode([window], len(TAGS))).values
    assert values["seq"] == [7] and values["active"] == ['["jazz"]']
    assert values["peak_dbfs"] == [-3.25] and values["content"] == ["music"]


def test_a_window_without_audio_or_mood_has_none_of_them():
    message = _wire(_scores())
    window = rows.window(message.header, message.body, rows.names(message.body.active), None)
    assert window.rms_dbfs is None and window.mood is None and window.valence is None
    assert window.momentary_lufs is None and window.content is None
    np.testing.assert_allclose(window.raw, [0.1, 0.9, 0.5, 0.0])


def test_a_window_that_a_block_cannot_hold_fails_alone():
    message = _wire(_scores(start_s=1e13, end_s=1e13))  # past 64 bits of microseconds
    with pytest.raises(OverflowError):
        rows.window(message.header, message.body, "[]", None)
    with pytest.raises(OverflowError):
        blocks.Window(seq=2**64, sent_at=0.0, start_s=0.0, end_s=1.0, start_sample=0,
                      end_sample=1, raw=(0.5,), smoothed=(0.5,), active="[]", latency_ms=1.0)


def test_text_loses_only_what_postgresql_cannot_hold():
    assert rows.text("a\x00b") == "a\ufffdb"
    assert rows.text("caf\u00e9") == "caf\u00e9" and rows.text(None) is None
    assert rows.names(["x\x00", "\u00e9"]) == '["x\ufffd","\u00e9"]'
    assert rows.model_key(ModelRef("m\x00", "h"), ("a", "b")) == ("m\ufffd", "h", '["a","b"]')


def test_each_message_type_has_its_row():
    session = "s" * 32
    event = _wire(EventBody(tag="jazz\x00", state="on", score=0.75, time_s=4.0, sample=64_000))
    assert rows.event_row(event.header, session, event.body) == {
        "stream": "radio-1", "session": session, "seq": 7, "sent_at": 1_700_000_000.25,
        "tag": "jazz\ufffd", "state": "on", "score": 0.75, "time_s": 4.0, "sample": 64_000}
    status = _wire(StatusBody(state="running", title="Song", counters={"frames": 3}))
    row = rows.status_row(status.header, session, status.body, '{"frames":3}')
    assert (row["state"], row["title"], row["counters"]) == ("running", "Song", '{"frames":3}')
    silence = _wire(SilenceBody(state="on", time_s=9.0, sample=144_000, start_s=7.0,
                                start_sample=112_000, duration_s=2.0, threshold_dbfs=-60.0,
                                cause="silence"))
    row = rows.silence_row(silence.header, session, silence.body)
    assert (row["state"], row["duration_s"], row["cause"]) == ("on", 2.0, "silence")
    track = _wire(TrackBody(
        title="Song", reason="title_change", start_s=0.0, end_s=60.0, start_sample=0,
        end_sample=960_000, started_at=1.0, ended_at=61.0, windows=20, tags=TAGS,
        mean_raw=[0.1, 0.2, 0.3, 0.4], mean_smoothed=[0.1, 0.2, 0.3, 0.4],
        active_share=[0.0, 1.0, 0.5, 0.0], active=["jazz"], model=MODEL))
    key = rows.model_key(MODEL, TAGS)
    row = rows.track_row(track.header, session, track.body, key)
    assert row["model_id"] == key and json.loads(row["active"]) == ["jazz"]
    assert row["windows"] == 20 and row["reason"] == "title_change"
    beat = _wire(HeartbeatBody(uptime_s=5.0, streams=3), stream="")
    assert rows.daemon_row(beat.header, session, beat.body) == {
        "session": session, "first_sent_at": 1_700_000_000.25,
        "last_sent_at": 1_700_000_000.25, "last_seq": 7, "uptime_s": 5.0, "streams": 3}
    assert rows.session_row(event.header, session, "t" * 32, True) == {
        "stream": "radio-1", "session": session, "first_sent_at": 1_700_000_000.25,
        "previous_session": "t" * 32, "restarted": True}
    assert rows.gap_row("radio-1", session, "scores", 4, 2, "seq", 9.0)["missed"] == 2


def test_counters_past_the_bound_keep_the_first_by_name():
    counters = {f"c{i:03d}": i for i in range(100)}
    stored, kept = rows.stored_counters(counters, 100)
    assert len(stored) <= 100 and 0 < kept < 100
    assert list(json.loads(stored)) == sorted(counters)[:kept]
    assert rows.stored_counters({"a": 1}, 100) == ('{"a": 1}', 1)


def test_the_decoders_short_way_for_scores_gives_what_decode_gives():
    """Scores frames whose tags it has checked before are parsed without them: each of these
    must still decode (or be refused) exactly as the full decode does."""
    decoder = Decoder()
    first = encode(make_message(_scores(), session="s" * 32, stream="radio-1", seq=0))
    assert decoder.decode(first) == decode(first)  # the tags are remembered now
    topic, header, body = first
    cases = {
        "the same model": body,
        # a second "tags" member: the last one counts, for both
        "tags twice": body.replace(b'{"active"', b'{"tags":["a","b","c","d"],"active"', 1),
        "another model's name": body.replace(b'"name":"mood"', b'"name":"other"'),
        "an active tag not in tags": body.replace(b'"active":["jazz"]',
                                                  b'"active":["pop"]'),
        "a score as text": body.replace(b'"raw":[0.1', b'"raw":["0.1"'),
        "a score as an integer": body.replace(b'"raw":[0.1', b'"raw":[1'),
        "tags not last": body.replace(b',"tags":["rock","jazz","calm","dark"]}', b"}")
        .replace(b'{"active"', b'{"tags":["rock","jazz","calm","dark"],"active"'),
    }
    for name, changed in cases.items():
        frames = [topic, header, changed]
        try:
            expected = decode(frames)
        except Exception as exc:  # noqa: BLE001 - the same refusal from both, then
            with pytest.raises(type(exc)):
                decoder.decode(frames)
            continue
        assert decoder.decode(frames) == expected, name


def test_a_block_of_windows_the_decoder_read_is_the_block_of_their_scores():
    """The Decoder keeps a scores message's raw and smoothed as the C++ core read them, packed
    as float64 (scores_f64); a block's arrays come from those bytes rather than from every
    float of the tuples. The block, its bytes and its rollup are exactly those of the tuples,
    and a window without the bytes (another decoder's, a mixed block) is packed as before."""
    decoder = Decoder()
    rng = np.random.default_rng(3)
    windows = []
    for seq in range(40):
        raw = np.round(rng.random(len(TAGS)), 6).tolist()
        smoothed = [-0.5, 1.25, *np.round(rng.random(len(TAGS) - 2), 6).tolist()]  # past [0, 1]
        message = decoder.decode(encode(make_message(
            _scores(raw=raw, smoothed=smoothed, active=["rock", "calm"][:seq % 3]),
            session="s" * 32, stream="radio-1", seq=seq, sent_at=1_700_000_000.0 + seq)))
        assert message.body.raw == tuple(raw) and message.body.smoothed == tuple(smoothed)
        windows.append(rows.window(message.header, message.body,
                                   rows.names(message.body.active), None))
    packed = [w.scores_f64 for w in windows]
    assert all(p is not None for p in packed[1:])  # the first taught the decoder the tags
    assert np.frombuffer(packed[5], np.float64).tolist() == [*windows[5].raw,
                                                            *windows[5].smoothed]
    bare = [w._replace(scores_f64=None) for w in windows]
    for some in (windows[1:], windows):  # all packed; one without
        raw, smoothed = blocks._scores(some, len(TAGS))
        np.testing.assert_array_equal(raw, np.array([w.raw for w in some]))
        np.testing.assert_array_equal(smoothed, np.array([w.smoothed for w in some]))
        assert blocks.encode(some, len(TAGS)) == blocks.encode(bare[-len(some):], len(TAGS))
        assert blocks.rollup(some, TAGS) == blocks.rollup(bare[-len(some):], TAGS)
    decoded = blocks.decode(blocks.encode(windows[1:], len(TAGS)))
    assert decoded.smoothed[:, 0].tolist() == [-0.5] * 39  # float32 kind: exact here
