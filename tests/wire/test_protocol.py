"""The wire format: pure encode/decode, stored reference messages, and the protocol document."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support.helpers import decodes_or_refuses

from streamtag import _core
from streamtag.engine.tracks import SCORE_DECIMALS
from streamtag.errors import ProtocolError
from streamtag.wire.protocol import (
    CONTENT_KINDS,
    HEADER_FIELDS,
    MAX_BODY_BYTES,
    MSG_TYPES,
    PROTOCOL_VERSION,
    Decoder,
    EventBody,
    Header,
    HeartbeatBody,
    Message,
    ModelRef,
    ScoresBody,
    ScoresEncoder,
    SilenceBody,
    StatusBody,
    TrackBody,
    canonical_json,
    decode,
    decode_reply,
    decode_request,
    encode,
    encode_reply,
    encode_request,
    header_frame,
    make_message,
    new_msg_id,
    new_session_id,
    subscription_prefix,
    validate_stream_id,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parents[1] / "data" / "protocol"
DOC = ROOT / "docs" / "protocol.md"
REFERENCE_FILES = sorted(p for p in DATA.glob("*.json") if p.name != "invalid.json")
SESSION = "5f0c6a2e9d1b4c7e8a3f2b1d0e9c8a7b"


def frames_of(strings: list[str]) -> list[bytes]:
    return [s.encode("utf-8") for s in strings]


def sample_bodies() -> dict[str, object]:
    return {
        "scores": ScoresBody(start_s=3.0, end_s=6.0, start_sample=48000, end_sample=96000,
                             tags=["rock", "calm"], raw=[0.9, 0.1], smoothed=[0.8, 0.2],
                             active=["rock"], model=ModelRef("crnn", "sha256:00"),
                             latency_ms=12.5),
        "event": EventBody(tag="calm", state="off", score=0.2, time_s=9.0, sample=144000),
        "status": StatusBody(state="reconnecting", error="HTTP 503", counters={"reconnects": 2},
                             title="Ünïcode – title", source="http://example.com/s"),
        "heartbeat": HeartbeatBody(uptime_s=1.5, streams=3),
        "track": TrackBody(title="Ünïcode; 'quoted'", reason="end", start_s=12.0, end_s=15.0,
                           start_sample=192000, end_sample=240000, started_at=1732233600.0,
                           ended_at=1732233603.5, windows=2, tags=["rock", "calm"],
                           mean_raw=[0.9, 0.1], mean_smoothed=[0.8, 0.2],
                           active_share=[1.0, 0.5], active=["rock"],
                           model=ModelRef("crnn", "sha256:00")),
        "silence": SilenceBody(state="off", time_s=45.0, sample=720000, start_s=20.0,
                               start_sample=320000, duration_s=25.0, threshold_dbfs=-50.0),
    }


def sample_message(msg_type: str, **header) -> Message:
    stream = "" if msg_type == "heartbeat" else "radio-1"
    options = {"session": SESSION, "stream": stream, "seq": 4, "sent_at": 1732233600.5}
    return make_message(sample_bodies()[msg_type], **{**options, **header})


# ---------------------------------------------------------------- round trips

@pytest.mark.parametrize("msg_type", MSG_TYPES)
def test_encode_decode_round_trip(msg_type):
    message = sample_message(msg_type)
    frames = encode(message)
    assert len(frames) == 3 and all(isinstance(f, bytes) for f in frames)
    assert frames[0] == message.topic.encode()
    again = decode(frames)
    assert again == message
    assert encode(again) == frames
    assert type(again.body).msg_type == msg_type
    assert Message.from_dict(json.loads(json.dumps(message.to_dict()))) == message


def test_topics_follow_the_header():
    assert sample_message("scores").topic == "scores.radio-1"
    assert sample_message("event").topic == "event.radio-1"
    assert sample_message("status").topic == "status.radio-1"
    assert sample_message("heartbeat").topic == "heartbeat"
    assert sample_message("track").topic == "track.radio-1"
    assert subscription_prefix("track", "radio-1") == b"track.radio-1"
    assert subscription_prefix("event") == b"event."
    assert subscription_prefix("scores", "radio-1") == b"scores.radio-1"
    assert subscription_prefix("heartbeat", "radio-1") == b"heartbeat"


def test_numpy_values_are_written_as_plain_json():
    body = ScoresBody(start_s=np.float64(0.0), end_s=np.float32(3.0), start_sample=np.int64(0),
                      end_sample=np.int64(48000), tags=np.array(["a", "b"]).tolist(),
                      raw=np.array([0.5, 0.25], dtype=np.float32),
                      smoothed=np.array([0.5, 0.25]), active=[], model={"name": "m", "hash": ""},
                      latency_ms=np.float32(2.0))
    message = make_message(body, session=SESSION, stream="a", seq=0, sent_at=1.0)
    body_json = json.loads(encode(message)[2])
    assert body_json["raw"] == [0.5, 0.25] and body_json["end_sample"] == 48000
    assert decode(encode(message)) == message


def test_canonical_json_is_sorted_compact_utf8():
    frames = encode(sample_message("status"))
    assert b" " not in frames[1]
    header = json.loads(frames[1])
    assert list(header) == sorted(header)
    assert "Ünïcode – title".encode() in frames[2]  # UTF-8, not \u escapes


def test_session_and_message_ids_are_uuid4_hex():
    message = make_message(sample_bodies()["heartbeat"], session=new_session_id(), stream="",
                           seq=0)
    for value in (message.session, message.header.msg_id):
        assert re.fullmatch(r"[0-9a-f]{32}", value)
        assert uuid.UUID(hex=value).version == 4 and uuid.UUID(hex=value).variant == uuid.RFC_4122
    assert new_session_id() != new_session_id()
    ids = [new_msg_id() for _ in range(10000)]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(hex=i).hex == i and uuid.UUID(hex=i).version == 4 for i in ids[:100])


# ---------------------------------------------------------------- the publisher's fast writers

def test_header_frame_is_the_encoded_header():
    header = Header(version=PROTOCOL_VERSION, msg_type="scores", msg_id=new_msg_id(),
                    session=SESSION, stream="radio-1", seq=12, sent_at=1732233600.125)
    assert header_frame("scores", session=SESSION, stream="radio-1", seq=12,
                        sent_at=1732233600.125, msg_id=header.msg_id) \
        == encode(Message(header, sample_bodies()["scores"]))[1]


@settings(max_examples=300, deadline=None)
@example(msg_id="a", session="\ud800", stream="s", seq=1, sent_at=1.5, version="1.1")
@example(msg_id="é\n\"", session="😀", stream="\x00", seq=0, sent_at=-0.0, version="1.1")
@given(msg_id=st.text(max_size=40), session=st.text(max_size=20), stream=st.text(max_size=20),
       seq=st.integers(-2**70, 2**70) | st.booleans() | st.floats(),
       sent_at=st.floats() | st.integers(0, 2**40), version=st.text(max_size=5))
def test_header_frame_writes_what_canonical_json_writes_or_refuses_the_same(
        msg_id, session, stream, seq, sent_at, version):
    fields_ = dict(msg_id=msg_id, msg_type="scores", sent_at=sent_at, seq=seq, session=session,
                   stream=stream, version=version)
    try:
        expected = canonical_json(fields_)
    except ProtocolError as exc:  # NaN, or a lone surrogate that UTF-8 cannot write
        with pytest.raises(ProtocolError, match=re.escape(str(exc))):
            header_frame(**fields_)
    else:
        assert header_frame(**fields_) == expected


def _json_of_rounded(values: np.ndarray, decimals: int) -> str:
    return json.dumps(np.round(values.astype(np.float64), decimals).tolist(),
                      separators=(",", ":"))


@pytest.mark.parametrize("decimals", [0, 1, 3, SCORE_DECIMALS, 10, 15])
def test_rounded_json_array_writes_the_bytes_of_json_dumps_of_numpy_round(decimals):
    rng = np.random.default_rng(decimals)
    # where repr's layout changes (1e-05 | 0.0001, 1e+16 | 1000000000000000.0), zeros of
    # both signs, halves (ties to even), and scores as models give them, float32 included
    edges = np.array([0.0, -0.0, 1.0, 1e-7, 5e-6, 1.2e-5, 9.9e-5, 1e-4, 0.5, 2.5, -3.25,
                      0.5e-6, 1.5e-6, 2.5e-6, 0.1234565, 1e15, 1e16, 1.5e16, 9.999999e15,
                      123456789012.345, 1e290, -1e-300, 5e-324])
    arrays = [edges, rng.random(50).astype(np.float32), rng.random(1000) ** 8]
    arrays += [rng.standard_normal(5000) * scale for scale in (1e-9, 1e-3, 1.0, 1e3, 1e17)]
    bits = rng.integers(0, 2**63, 20000, dtype=np.int64).view(np.float64)  # any double
    with np.errstate(over="ignore", invalid="ignore"):
        arrays.append(bits[np.isfinite(np.round(bits, decimals))])
    for values in arrays:
        assert _core.rounded_json_array(values, decimals) == _json_of_rounded(values, decimals)
    assert _core.rounded_json_array(np.array([]), decimals) == "[]"


def test_rounded_json_array_gives_none_for_a_value_not_finite_and_refuses_bad_calls():
    assert _core.rounded_json_array(np.array([0.1, np.nan]), 6) is None
    assert _core.rounded_json_array(np.array([np.inf]), 0) is None
    assert _core.rounded_json_array(np.array([1e300]), 15) is None  # finite, but not once rounded
    with pytest.raises(ValueError, match="decimals must be 0 to 15, got 16"):
        _core.rounded_json_array(np.array([0.5]), 16)
    with pytest.raises(ValueError, match="values must be 1-D, got an array with 2 dimensions"):
        _core.rounded_json_array(np.zeros((2, 2)), 6)


_finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
_names = st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=6, unique=True)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_scores_encoder_writes_the_bytes_of_the_encoded_body(data):
    tags = data.draw(_names)
    n = len(tags)
    numbers = st.lists(_finite | st.integers(-5, 5).map(np.float32), min_size=n, max_size=n)
    start_s = data.draw(st.floats(0, 1e6))
    start_sample = data.draw(st.integers(0, 2**40))
    values = dict(start_s=start_s, end_s=start_s + data.draw(st.floats(0, 100)),
                  start_sample=start_sample,
                  end_sample=np.int64(start_sample + data.draw(st.integers(0, 10**6))),
                  raw=data.draw(numbers), smoothed=np.array(data.draw(numbers)),
                  active=data.draw(st.lists(st.sampled_from(tags), max_size=n)),
                  latency_ms=data.draw(_finite),
                  content=data.draw(st.none() | st.sampled_from(CONTENT_KINDS)))
    model = {"name": data.draw(st.text(max_size=5)), "hash": "sha256:ab"}
    encoder = ScoresEncoder(tuple(tags), model)
    expected = encode(make_message(ScoresBody(tags=tags, model=model, **values),
                                   session=SESSION, stream="a", seq=0, sent_at=1.0))[2]
    assert encoder.body_frame(**values) == expected


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_scores_encoder_rounds_as_numpy_round_then_writes_the_encoded_body(data):
    tags = data.draw(_names)
    n = len(tags)
    floats = st.lists(_finite, min_size=n, max_size=n)
    kinds = [lambda v: np.array(v, dtype=np.float32), lambda v: np.array(v), list,
             lambda v: np.array(v, dtype=np.float64).reshape(1, -1)[0, ::1]]
    raw = data.draw(st.sampled_from(kinds))(data.draw(floats))
    smoothed = data.draw(st.sampled_from(kinds))(data.draw(floats))
    values = dict(start_s=1.5, end_s=4.5, start_sample=24000, end_sample=72000,
                  active=data.draw(st.lists(st.sampled_from(tags), max_size=n)),
                  latency_ms=12.25)
    model = {"name": "m", "hash": "sha256:ab"}

    def rounded(v) -> list[float]:
        return np.round(np.asarray(v, dtype=np.float64), SCORE_DECIMALS).tolist()
    expected = encode(make_message(
        ScoresBody(tags=tags, model=model, raw=rounded(raw), smoothed=rounded(smoothed),
                   **values), session=SESSION, stream="a", seq=0, sent_at=1.0))[2]
    got = ScoresEncoder(tuple(tags), model).body_frame(
        raw=raw, smoothed=smoothed, decimals=SCORE_DECIMALS, **values)
    assert got == expected


@pytest.mark.parametrize("raw", [np.array([np.nan, 0.1]), np.array([0.1, np.inf], np.float32),
                                 np.array([1e303, 0.1]), np.array([0.1]),
                                 np.array([0.1, 0.2, 0.3]), np.array([[0.1, 0.2]])])
def test_scores_encoder_with_decimals_refuses_an_array_with_the_words_of_its_list(raw):
    body = sample_bodies()["scores"]
    per_window = {f.name: getattr(body, f.name) for f in fields(ScoresBody)
                  if f.name not in ("tags", "model")}
    encoder = ScoresEncoder(body.tags, body.model)
    with np.errstate(over="ignore"):
        listed = np.round(raw.astype(np.float64), SCORE_DECIMALS).tolist()
    with pytest.raises(ProtocolError) as expected:
        encoder.body_frame(**{**per_window, "raw": listed})
    with pytest.raises(ProtocolError) as got:
        encoder.body_frame(**{**per_window, "raw": raw}, decimals=SCORE_DECIMALS)
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("change", [
    {"raw": [float("nan"), 0.1]},
    {"raw": [float("inf"), 0.1]},
    {"smoothed": [0.5]},
    {"smoothed": ["0.5", 0.1]},
    {"active": ["jazz"]},
    {"active": "rock"},
    {"active": [["rock"]]},
    {"active": [5]},
    {"active": iter(["rock", "jazz"])},  # read once: the error still names the unknown tag
    {"end_sample": 1},
    {"start_s": -1.0},
    {"end_s": 0.5},
    {"start_sample": 1.5},
    {"latency_ms": float("nan")},
    {"content": "jingle"},
    {"content": 5},
])
def test_scores_encoder_refuses_what_a_scores_body_refuses_with_its_words(change):
    body = sample_bodies()["scores"]
    fields_ = {f.name: getattr(body, f.name) for f in fields(ScoresBody)}
    iterators = {k: list(v) for k, v in change.items() if isinstance(v, Iterator)}
    def fresh() -> dict:  # an iterator is read once: each side gets its own
        return {**fields_, **change, **{k: iter(v) for k, v in iterators.items()}}
    with pytest.raises(ProtocolError) as expected:
        ScoresBody(**fresh())
    per_window = {k: v for k, v in fresh().items() if k not in ("tags", "model")}
    with pytest.raises(ProtocolError) as got:
        ScoresEncoder(body.tags, body.model).body_frame(**per_window)
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("tags", [["rock", "rock"], "rock", ["rock", ""], [1, 2]])
def test_scores_encoder_refuses_bad_tags(tags):
    with pytest.raises(ProtocolError, match="scores tags"):
        ScoresEncoder(tags, {"name": "m", "hash": ""})


# ---------------------------------------------------------------- stored reference messages

def test_reference_files_cover_every_message_type():
    kinds = {json.loads(p.read_text())["message"]["header"]["msg_type"] for p in REFERENCE_FILES}
    assert kinds == set(MSG_TYPES)


@pytest.mark.parametrize("path", REFERENCE_FILES, ids=lambda p: p.stem)
def test_reference_message_decodes_and_reencodes_byte_identically(path):
    stored = json.loads(path.read_text(encoding="utf-8"))
    frames = frames_of(stored["frames"])
    message = decode(frames)
    assert message.to_dict() == stored["message"]  # the logical message, field by field
    assert Message.from_dict(stored["message"]) == message
    if stored["canonical"]:
        assert encode(message) == frames
    else:  # another writer's spelling: re-encoding gives ours, which decodes the same
        assert decode(encode(message)) == message


def test_reference_messages_carry_the_fields_a_plain_reader_expects():
    scores = decode(frames_of(json.loads((DATA / "scores.json").read_text())["frames"]))
    assert scores.body.tags == ("rock", "calm", "vocal")
    assert scores.body.end_sample - scores.body.start_sample == 48000
    assert scores.body.model == ModelRef(
        "crnn-moodtheme", "05a8b52dba23368bb6ac27569cfdc8baedb6fa91d1d2639a2c02072dbf5a199c")
    status = decode(frames_of(json.loads((DATA / "status.json").read_text())["frames"]))
    assert status.body.title == "Café Tacvba – Eres" and status.body.error is None
    track = decode(frames_of(json.loads((DATA / "track.json").read_text())["frames"]))
    assert track.header.version == "1.1" and track.topic == "track.radio-1"
    assert track.body.windows == 80 and track.body.active == ("rock",)
    assert (track.body.end_sample - track.body.start_sample) / 16000 == pytest.approx(
        track.body.end_s - track.body.start_s)
    assert track.body.heard_from_start is None  # 1.1: not told
    joined = decode(frames_of(json.loads((DATA / "track_joined.json").read_text())["frames"]))
    assert joined.header.version == "1.5" and joined.body.heard_from_start is False


INVALID = json.loads((DATA / "invalid.json").read_text(encoding="utf-8"))["cases"]


@pytest.mark.parametrize("case", INVALID, ids=[c["why"] for c in INVALID])
def test_reference_invalid_messages_are_refused(case):
    with pytest.raises(ProtocolError, match=re.escape(case["error"])):
        decode(frames_of(case["frames"]))


# ---------------------------------------------------------------- versions and leniency

def test_unknown_major_version_is_refused_naming_the_readable_majors():
    frames = encode(sample_message("event"))
    header = json.loads(frames[1])
    header["version"] = "2.0"
    with pytest.raises(ProtocolError, match="reads major version 1"):
        decode([frames[0], json.dumps(header).encode(), frames[2]])
    with pytest.raises(ProtocolError):
        sample_message("event", version="2.0")  # nor can one be built


def test_higher_minor_version_and_unknown_fields_are_accepted():
    frames = encode(sample_message("scores"))
    header = {**json.loads(frames[1]), "version": "1.17", "shiny_new": {"a": [1, 2]}}
    body = json.loads(frames[2])
    body["loudness_lufs"] = -14.0
    body["model"]["epoch"] = 12
    message = decode([frames[0], json.dumps(header).encode(), json.dumps(body).encode()])
    assert message.header.version == "1.17" and message.header.major == 1
    assert message.body == sample_message("scores").body


def test_optional_status_fields_may_be_absent():
    frames = encode(sample_message("status"))
    body = json.loads(frames[2])
    del body["title"], body["source"]
    message = decode([frames[0], frames[1], json.dumps(body).encode()])
    assert message.body.title is None and message.body.source is None
    assert message.body.heard_from_start is None and "heard_from_start" not in body


def test_a_status_tells_whether_its_title_was_heard_from_its_start_as_a_boolean_only():
    told = StatusBody(state="running", title="Next", heard_from_start=True)
    assert json.loads(encode(make_message(told, session=SESSION, stream="radio-1", seq=1,
                                          sent_at=1.0))[2])["heard_from_start"] is True
    with pytest.raises(ProtocolError, match="status heard_from_start must be true or false"):
        StatusBody(state="running", title="Next", heard_from_start=0)


@pytest.mark.parametrize("frames", [
    [], [b"heartbeat"], b"heartbeat", "heartbeat", None, [1, 2, 3],
    [b"\xff\xfe", b"{}", b"{}"],
    [b"heartbeat", b"\xc3\x28", b"{}"],
    [b"heartbeat", b"[" * 100000, b"{}"],
    [b"heartbeat", b'{"version":"1.0","seq":1' + b"0" * 5000 + b"}", b"{}"],
])
def test_malformed_frames_raise_protocol_error(frames):
    with pytest.raises(ProtocolError):
        decode(frames)


def test_a_lone_surrogate_is_refused():
    frames = encode(sample_message("event"))
    body = json.loads(frames[2])
    body["tag"] = "\ud800"
    with pytest.raises(ProtocolError, match="not valid Unicode"):
        decode([frames[0], frames[1], json.dumps(body).encode()])


@pytest.mark.parametrize("change", [
    {"raw": [float("nan"), 0.1]},
    {"smoothed": [0.5]},
    {"active": ["jazz"]},
    {"tags": ["rock", "rock"]},
    {"end_sample": 1},
    {"tags": "rock"},
    {"model": "crnn"},
])
def test_invalid_bodies_cannot_be_built(change):
    fields_ = {f.name: getattr(sample_bodies()["scores"], f.name) for f in fields(ScoresBody)}
    with pytest.raises(ProtocolError):
        ScoresBody(**{**fields_, **change})


def track_fields(**change) -> dict:
    body = sample_bodies()["track"]
    return {**{f.name: getattr(body, f.name) for f in fields(TrackBody)}, **change}


@pytest.mark.parametrize(("change", "error"), [
    ({"reason": "reconnect"}, "track reason must be one of title_change, end"),
    ({"mean_raw": [0.9]}, "track mean_raw has 1 values for 2 tags"),
    ({"mean_smoothed": [0.9, float("inf")]}, "track mean_smoothed[1] must be finite"),
    ({"active_share": [1.5, 0.0], "active": ["rock"]}, "active_share of 'rock' must be in [0, 1]"),
    ({"active": []}, "whose active_share is over 0.5 once (['rock'])"),
    ({"active": ["rock", "calm"]}, "whose active_share is over 0.5"),
    ({"active": ["rock", "rock"]}, "whose active_share is over 0.5"),
    ({"end_s": 11.0}, "track end_s must be >= 12"),
    ({"end_sample": 1}, "track end_sample must be >= 192000"),
    ({"windows": -1}, "track windows must be >= 0"),
    ({"windows": 0}, "a track of 0 windows has no means"),
    ({"started_at": "yesterday"}, "track started_at must be a number"),
    ({"title": 5}, "track title must be a string"),
    ({"model": "crnn"}, "track model must be an object"),
    ({"heard_from_start": 1}, "track heard_from_start must be true or false"),
    ({"heard_from_start": "yes"}, "track heard_from_start must be true or false"),
])
def test_invalid_track_bodies_cannot_be_built(change, error):
    with pytest.raises(ProtocolError, match=re.escape(error)):
        TrackBody(**track_fields(**change))


def test_a_track_without_windows_has_no_means_and_a_missing_title_is_null():
    body = TrackBody(**track_fields(windows=0, tags=[], mean_raw=[], mean_smoothed=[],
                                    active_share=[], active=[], title=None))
    message = make_message(body, session=SESSION, stream="a", seq=0, sent_at=1.0)
    assert json.loads(encode(message)[2])["title"] is None
    assert decode(encode(message)).body == body


def test_a_1_0_reader_skips_a_track_message_as_an_unknown_type():
    # What a 1.0 reader does with a 1.1 track message: an unknown msg_type is refused with
    # ProtocolError, which Subscriber counts as invalid and skips (docs/protocol.md).
    frames = encode(sample_message("track"))
    header = json.loads(frames[1])
    assert header["version"] == PROTOCOL_VERSION
    header["msg_type"] = "lyrics"  # a type from a later minor that this reader does not know
    with pytest.raises(ProtocolError, match="unknown msg_type 'lyrics'"):
        decode([b"lyrics.radio-1", json.dumps(header).encode(), frames[2]])
    assert not b"track.radio-1".startswith(subscription_prefix("scores"))


@pytest.mark.parametrize("stream", ["radio-1", "a", "studio_b:mic.2", "x" * 128])
def test_valid_stream_ids(stream):
    assert validate_stream_id(stream) == stream


@pytest.mark.parametrize("stream", ["", "radio 1", "ä", "a/b", "x" * 129, None, 5, "a\n"])
def test_invalid_stream_ids(stream):
    with pytest.raises(ProtocolError, match="stream id"):
        validate_stream_id(stream)


def test_control_request_and_reply_frames():
    assert decode_request(encode_request({"cmd": "status", "stream": "a"})) == {
        "cmd": "status", "stream": "a"}
    assert decode_reply(encode_reply({"ok": False, "error": "no"}))["error"] == "no"
    for bad in (b"[]", b'{"cmd": 3}', b"\xff", b"{"):
        with pytest.raises(ProtocolError):
            decode_request(bad)
    for bad in ({"ok": "yes"}, {"ok": False}):
        with pytest.raises(ProtocolError):
            encode_reply(bad)
    with pytest.raises(ProtocolError):
        encode_request({"stream": "a"})


# ---------------------------------------------------------------- fuzzing decode

def _json_containers(inner: st.SearchStrategy) -> st.SearchStrategy:
    # a named function: hypothesis reads a lambda's source to see that it uses its argument,
    # and cannot where the lambda spans lines (a deprecation warning, an error under pytest)
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                         max_size=4)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats() | st.text(max_size=12), _json_containers, max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=5))
def test_decode_of_arbitrary_bytes_gives_a_message_or_protocol_error(frames):
    decodes_or_refuses(frames)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msg_type=st.sampled_from(MSG_TYPES),
       header_changes=st.dictionaries(st.sampled_from([*HEADER_FIELDS, "extra"]), json_values,
                                      max_size=3),
       body_changes=st.dictionaries(st.text(max_size=12) | st.sampled_from(
           ["start_s", "end_s", "tags", "raw", "active", "model", "state", "counters", "tag",
            "sample", "streams", "uptime_s", "title", "error"]), json_values, max_size=3),
       drop=st.sets(st.sampled_from([*HEADER_FIELDS, "tags", "state", "streams"]), max_size=2),
       topic=st.none() | st.text(max_size=20))
def test_decode_of_mutated_messages_gives_a_message_or_protocol_error(
        msg_type, header_changes, body_changes, drop, topic):
    frames = encode(sample_message(msg_type))
    header = {**json.loads(frames[1]), **header_changes}
    body = {**json.loads(frames[2]), **body_changes}
    for key in drop:
        header.pop(key, None)
        body.pop(key, None)
    topic_bytes = frames[0] if topic is None else topic.encode("utf-8", "surrogatepass")
    mutated = [topic_bytes, json.dumps(header).encode("utf-8", "surrogatepass"),
               json.dumps(body).encode("utf-8", "surrogatepass")]
    decodes_or_refuses(mutated)



def decoded_or_error(decoder, frames) -> Message | str:
    try:
        return decoder(frames)
    except ProtocolError as exc:
        return f"ProtocolError: {exc}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msg_type=st.sampled_from(["scores", "scores", "event", "heartbeat", *MSG_TYPES]),
       header_changes=st.dictionaries(st.sampled_from([*HEADER_FIELDS, "extra"]), json_values,
                                      max_size=2),
       body_changes=st.dictionaries(st.sampled_from(
           ["start_s", "end_s", "start_sample", "end_sample", "tags", "raw", "smoothed",
            "active", "model", "latency_ms", "audio", "mood", "content", "tag", "state",
            "score", "time_s", "sample", "uptime_s", "streams", "extra"]), json_values,
           max_size=2),
       item_changes=st.dictionaries(st.sampled_from(["raw", "smoothed", "active", "tags"]),
                                    json_values, max_size=2),
       drop=st.sets(st.sampled_from([*HEADER_FIELDS, "tags", "raw", "active", "model",
                                     "state", "streams"]), max_size=1),
       topic=st.none() | st.sampled_from(["scores.radio-2", "event.radio-1", "heartbeat"]))
@example(msg_type="scores", header_changes={}, body_changes={"active": ["jazz"]},
         item_changes={}, drop=set(), topic=None)
@example(msg_type="scores", header_changes={}, body_changes={"active": [["rock"]]},
         item_changes={}, drop=set(), topic=None)
@example(msg_type="scores", header_changes={}, body_changes={}, item_changes={"raw": 1},
         drop=set(), topic=None)
@example(msg_type="scores", header_changes={}, body_changes={"latency_ms": 1e400},
         item_changes={}, drop=set(), topic=None)
@example(msg_type="scores", header_changes={"seq": 2**64}, body_changes={}, item_changes={},
         drop=set(), topic=None)
@example(msg_type="event", header_changes={"session": "\ud800"}, body_changes={},
         item_changes={}, drop=set(), topic=None)
@example(msg_type="event", header_changes={}, body_changes={"time_s": -1.0},
         item_changes={}, drop=set(), topic=None)
@example(msg_type="event", header_changes={}, body_changes={"tag": ""}, item_changes={},
         drop=set(), topic=None)
def test_the_decoder_of_many_messages_decodes_as_decode_does(
        msg_type, header_changes, body_changes, item_changes, drop, topic):
    """A subscriber's Decoder, which checks what repeats once, gives the same Message or the
    same ProtocolError as decode for every message, after honest ones of the same stream and
    model taught it what to remember."""
    decoder = Decoder()
    honest = encode(sample_message(msg_type))
    assert decoder.decode(honest) == decode(honest)
    header = {**json.loads(honest[1]), **header_changes}
    body = {**json.loads(honest[2]), **body_changes}
    for name, value in item_changes.items():  # one item of an array changed
        if isinstance(body.get(name), list) and body[name]:
            body[name] = [value, *body[name][1:]]
    for key in drop:
        header.pop(key, None)
        body.pop(key, None)
    topic_bytes = honest[0] if topic is None else topic.encode()
    mutated = [topic_bytes, json.dumps(header).encode("utf-8", "surrogatepass"),
               json.dumps(body).encode("utf-8", "surrogatepass")]
    expected = decoded_or_error(decode, mutated)
    assert decoded_or_error(decoder.decode, mutated) == expected
    assert decoded_or_error(Decoder().decode, mutated) == expected


# The bytes a float array or a scores body may be made of, to mutate honest frames with.
_JSON_BYTES = st.sampled_from([b",", b"]", b"[", b"{", b"}", b'"', b"\\", b":", b" ", b"0",
                               b"1", b".", b"e", b"-", b"+", b"E", b"5", b"x", b'"raw":[',
                               b',"smoothed":[0.5', b',"raw":[0.25]', b"1e400", b"null"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(at=st.integers(min_value=0, max_value=10**6), cut=st.integers(0, 3),
       inserted=st.lists(_JSON_BYTES, max_size=3), with_audio=st.booleans())
@example(at=0, cut=0, inserted=[b"1e400"], with_audio=False)
def test_the_decoder_reads_canonical_scores_frames_changed_anywhere_as_decode_does(
        at, cut, inserted, with_audio):
    """Canonical scores frames (no white space: the C++ core reads their float arrays)
    changed at any byte, most often within or around the arrays: the Decoder gives what
    decode gives, a Message or a ProtocolError."""
    body = sample_bodies()["scores"]
    if with_audio:
        body = ScoresBody(**{**{f.name: getattr(body, f.name) for f in fields(ScoresBody)},
                             "audio": {"rms_dbfs": -20.5, "peak_dbfs": -3.25, "clipped": 0,
                                       "onset_rate_hz": 2.5, "energy": 0.125}})
    honest = encode(make_message(body, session=SESSION, stream="radio-1", seq=4,
                                 sent_at=1732233600.5))
    decoder = Decoder()
    assert decoder.decode(honest) == decode(honest)  # the model, its tags and stream learnt
    frame = honest[2]
    start = frame.index(b'"raw":[')  # most changes where the arrays are
    end = frame.index(b',"start_s"')
    place = start + at % (end - start) if at % 4 else at % len(frame)
    changed = frame[:place] + b"".join(inserted) + frame[place + cut:]
    mutated = [honest[0], honest[1], changed]
    expected = decoded_or_error(decode, mutated)
    assert decoded_or_error(decoder.decode, mutated) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False) | st.from_regex(
    r"\A-?(0|[1-9][0-9]{0,20})(\.[0-9]{1,25})?([eE][-+]?[0-9]{1,3})?\Z"), min_size=1,
    max_size=20))
def test_the_core_reads_json_floats_as_python_does(values):
    """take_float_arrays reads each float as json.loads does (the same double, correctly
    rounded, whatever its digits), and leaves to the full parser whatever json reads as
    anything but a float (an integer) or only past a double's range (1e400 as infinity,
    1e-400 as zero)."""
    texts = [repr(v) if isinstance(v, float) else v for v in values]
    array = "[" + ",".join(texts) + "]"
    frame = ('{"a":1,"raw":' + array + ',"smoothed":[0.5],"z":2}').encode()
    parsed = json.loads(array)
    taken = _core.take_float_arrays(frame, len(frame), ("raw", "smoothed"))
    in_range = [type(v) is float and np.isfinite(v)
                and (v != 0 or not re.search("[1-9]", re.split("[eE]", t)[0]))
                for v, t in zip(parsed, texts, strict=True)]
    if all(in_range):
        assert taken is not None
        raw, smoothed, rest, packed = taken
        assert [v.hex() for v in raw] == [v.hex() for v in parsed]  # -0.0 too
        assert smoothed == (0.5,) and rest == b'{"a":1,"z":2}'
        assert packed == np.array([*parsed, 0.5], dtype=np.float64).tobytes()
    else:
        assert taken is None


def test_the_core_takes_only_the_objects_own_float_arrays():
    keys = ("raw", "smoothed")
    frame = b'{"a":"x\\",\\"raw\\":[1.5]","b":{"raw":[2.5]},"raw":[0.5],"smoothed":[0.25]}'
    assert _core.take_float_arrays(frame, len(frame), keys) == (
        (0.5,), (0.25,), b'{"a":"x\\",\\"raw\\":[1.5]","b":{"raw":[2.5]}}',
        np.array([0.5, 0.25]).tobytes())
    for bad in (b'{"raw":[0.5],"smoothed":[0.5]}', b'{"a":1,"raw":[0.5]}',
                b'{"a":1,"raw":[0.5],"smoothed":[0.5],"raw":[0.5]}',
                b'{"a":1,"raw":[0.5, 0.25],"smoothed":[0.5]}',
                b'{"a":1,"raw":[],"smoothed":[0.5]}', b'{"a":1,"raw":[1],"smoothed":[0.5]}',
                b'{"a":{"b":1,"raw":[0.5],"smoothed":[0.5]}}'):
        assert _core.take_float_arrays(bad, len(bad), keys) is None, bad
    with pytest.raises(ValueError, match="end must be 0 to len"):
        _core.take_float_arrays(frame, len(frame) + 1, keys)


def test_the_decoder_reads_a_stream_of_reference_messages_as_decode_does():
    decoder = Decoder()
    for path in REFERENCE_FILES * 2:
        frames = frames_of(json.loads(path.read_text(encoding="utf-8"))["frames"])
        assert decoder.decode(frames) == decode(frames)


def test_a_deeply_nested_body_is_refused_without_harm():
    """A forged scores body of half a million nested arrays, within the body's byte cap: the
    Decoder refuses it as decode does (orjson, which it parses with, would crash the process
    on it)."""
    depth = MAX_BODY_BYTES["scores"] // 2 - 16
    frames = encode(sample_message("scores"))
    program = (
        "import sys\n"
        "from streamtag.errors import ProtocolError\n"
        "from streamtag.wire.protocol import Decoder\n"
        f"frames = [{frames[0]!r}, {frames[1]!r}, b'[' * {depth} + b']' * {depth}]\n"
        "decoder = Decoder()\n"
        "try:\n"
        "    decoder.decode(frames)\n"
        "except ProtocolError as exc:\n"
        "    print('refused:', exc)\n")
    # from outside the checkout: its streamtag/ (without the built extension) would come first
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            timeout=120, cwd=tempfile.gettempdir())
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused: scores body frame is not valid JSON" in result.stdout

# ---------------------------------------------------------------- the document

def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def test_document_states_the_code_protocol_version():
    found = re.findall(r"^Protocol version: (\S+)\s*$", doc_text(), flags=re.MULTILINE)
    assert found == [PROTOCOL_VERSION]


def test_document_describes_every_field_and_message_type():
    text = doc_text()
    names = [f.name for f in fields(Header)]
    for body in (ScoresBody, EventBody, StatusBody, HeartbeatBody, TrackBody, SilenceBody):
        names += [f.name for f in fields(body)]
        assert f"### `{body.msg_type}`" in text
    for name in names:
        assert f"`{name}`" in text, f"docs/protocol.md does not describe the field {name!r}"
    for section in ("## Topics", "## Header", "## Sequence numbers and sessions",
                    "## Control socket", "## Compatibility", "## A subscriber in plain pyzmq"):
        assert section in text


def test_document_examples_match_the_reference_bytes():
    # The examples on the page are the canonical bytes of the stored reference messages.
    text = doc_text()
    for name in ("scores", "scores_mood", "scores_loudness", "scores_content", "event",
                 "status", "heartbeat", "track", "silence"):
        frames = json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))["frames"]
        assert frames[2] in text, f"docs/protocol.md shows another {name} body than {name}.json"
    header = json.loads((DATA / "scores.json").read_text(encoding="utf-8"))["frames"][1]
    assert header in text


# ---------------------------------------------------------------- silence (1.2)

def test_silence_has_its_own_topic_apart_from_tag_events():
    # A 1.1 subscriber to "event." never receives one: the topics share no prefix.
    message = sample_message("silence")
    assert message.topic == "silence.radio-1"
    assert not message.topic.startswith("event.")
    assert subscription_prefix("silence", "radio-1") == b"silence.radio-1"
    assert subscription_prefix("silence") == b"silence."


@pytest.mark.parametrize("change, match", [
    ({"state": "started"}, "silence state"),
    ({"sample": 100}, "silence sample"),  # before start_sample
    ({"time_s": 10.0}, "silence time_s"),  # before start_s
    ({"duration_s": -1.0}, "silence duration_s"),
    ({"threshold_dbfs": 3.0}, "silence threshold_dbfs"),
    ({"threshold_dbfs": -130.0}, "silence threshold_dbfs"),
    ({"start_sample": -1}, "silence start_sample"),
])
def test_silence_body_refuses_what_a_reader_would(change, match):
    fields_ = {"state": "off", "time_s": 45.0, "sample": 720000, "start_s": 20.0,
               "start_sample": 320000, "duration_s": 25.0, "threshold_dbfs": -50.0}
    with pytest.raises(ProtocolError, match=match):
        SilenceBody(**{**fields_, **change})
