"""The protocol's JSON Schema and AsyncAPI document, made from protocol.py's declaration, against
the independent ``jsonschema`` package: the reference messages, the refused vectors, every
bound of the declaration, and what a real daemon sends."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from support.helpers import free_port, run_streamtag, stop_process

from streamtag.audio.files import write_audio
from streamtag.audio.synthetic import SyntheticConfig, generate_clip
from streamtag.commands.protocol import document
from streamtag.errors import ProtocolError
from streamtag.wire import protocol as p
from streamtag.wire import schema

jsonschema = pytest.importorskip("jsonschema", reason="the test extra's jsonschema is needed")
Draft202012Validator = jsonschema.Draft202012Validator

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "protocol"
VALID = sorted(path for path in DATA.glob("*.json") if path.name != "invalid.json")
INVALID = json.loads((DATA / "invalid.json").read_text(encoding="utf-8"))["cases"]


@pytest.fixture(scope="module")
def validator():
    made = schema.json_schema()
    Draft202012Validator.check_schema(made)
    return Draft202012Validator(made, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def logical(frames: list[str | bytes]) -> dict[str, Any]:
    """Frames as the schema reads them, parsed; ValueError where the framing itself is wrong
    (the checks before any schema: docs/protocol.md, Schema and conformance)."""
    if len(frames) != 3:
        raise ValueError(f"{len(frames)} frames")
    topic, header, body = (f.decode("utf-8") if isinstance(f, bytes) else f for f in frames)
    return {"topic": topic, "header": json.loads(header, parse_constant=_no_constant),
            "body": json.loads(body, parse_constant=_no_constant)}


# -- the documents ---------------------------------------------------------------------------


def test_the_documents_in_docs_are_what_the_command_prints():
    assert (ROOT / "docs" / "protocol" / "schema.json").read_text(encoding="utf-8") \
        == document(), "python -m streamtag.commands.protocol > docs/protocol/schema.json"
    assert (ROOT / "docs" / "protocol" / "asyncapi.json").read_text(encoding="utf-8") \
        == document(asyncapi=True), \
        "python -m streamtag.commands.protocol --asyncapi > docs/protocol/asyncapi.json"
    done = run_streamtag("protocol", "schema")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == schema.json_schema()
    done = run_streamtag("protocol", "schema", "--asyncapi")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["asyncapi"] == "3.0.0"


def test_the_schema_is_made_from_every_field_of_every_message():
    made = schema.json_schema()
    for msg_type, cls in p.BODY_TYPES.items():
        body = made["$defs"][msg_type]
        names = [f.name for f in dataclasses.fields(cls)]
        assert list(body["properties"]) == names
        assert body["required"] == [f.name for f in dataclasses.fields(cls)
                                    if f.default is dataclasses.MISSING]
    assert list(made["$defs"]["header"]["properties"]) == list(p.HEADER_FIELDS)
    heartbeat = made["$defs"]["heartbeat"]["properties"]
    assert heartbeat["interval_s"]["x-since"] == "1.8"


def test_closed_sets_are_marked_closed_and_message_types_open():
    made = schema.json_schema()["$defs"]
    closed = {(t, name) for t, body in made.items() for name, field in
              body["properties"].items() if field.get("x-closed") is True
              or any(a.get("x-closed") for a in field.get("anyOf", []))}
    assert closed == {("scores", "content"), ("event", "state"), ("status", "state"),
                      ("track", "reason"), ("silence", "state"), ("silence", "cause")}
    assert made["header"]["properties"]["msg_type"]["x-closed"] is False


def test_the_asyncapi_document_names_a_channel_and_a_payload_per_topic():
    doc = schema.asyncapi()
    assert doc["asyncapi"] == "3.0.0" and doc["info"]["version"] == p.PROTOCOL_VERSION
    for msg_type in p.MSG_TYPES:
        message = doc["components"]["messages"][msg_type]
        assert message["payload"]["schemaFormat"] == schema.SCHEMA_FORMAT
        assert message["payload"]["schema"] == schema.body_schemas()[msg_type]
        Draft202012Validator.check_schema(message["payload"]["schema"])
        assert doc["operations"][f"receive_{msg_type}"]["action"] == "receive"
    assert doc["channels"]["scores"]["address"] == "scores.{stream}"
    assert doc["operations"]["control"]["reply"]["channel"] == {"$ref": "#/channels/control"}


# -- the conformance suite -------------------------------------------------------------------


@pytest.mark.parametrize("path", VALID, ids=lambda path: path.name)
def test_the_reference_messages_validate(path, validator):
    frames = json.loads(path.read_text(encoding="utf-8"))["frames"]
    errors = [e.message for e in validator.iter_errors(logical(frames))]
    assert not errors, errors


@pytest.mark.parametrize("case", INVALID, ids=[c["why"] for c in INVALID])
def test_each_refused_vector_is_refused_by_the_schema_or_said_to_be_beyond_it(case, validator):
    """invalid.json's cases that the schema cannot refuse say which of the checks beyond a
    schema refuses them (``beyond_schema``, a key of schema.BEYOND_SCHEMA); every other case
    is refused by the schema."""
    beyond = case.get("beyond_schema")
    try:
        message = logical(case["frames"])
    except ValueError:
        assert beyond == "frames", case["why"]
        return
    refused = not validator.is_valid(message)
    if beyond is None:
        assert refused, f"{case['why']}: the schema takes it"
    else:
        assert beyond in schema.BEYOND_SCHEMA
        assert not refused, f"{case['why']}: the schema refuses it; drop beyond_schema"


# -- every bound of the declaration, refused by both -----------------------------------------


def _reference(msg_type: str) -> dict[str, Any]:
    """A message of each type with every optional field present."""
    name = {"scores": "scores_loudness.json", "silence": "silence_ended.json",
            "status": "status.json", "track": "track_joined.json",
            "heartbeat": "heartbeat.json", "event": "event.json"}[msg_type]
    message = logical(json.loads((DATA / name).read_text(encoding="utf-8"))["frames"])
    if msg_type == "scores":
        message["body"]["content"] = "music"
    if msg_type == "heartbeat":
        message["body"]["interval_s"] = 2.0
    return message


def _past(rule: p.Rule, value: Any) -> list[Any]:
    """Values just past the rule's bounds, for a field holding ``value``."""
    if isinstance(value, list):
        return [[bad] * max(len(value), 1) for bad in _past(rule, value[0] if value else
                                                            ("a" if rule.longest else 0.5))]
    if isinstance(value, str):
        out: list[Any] = []
        if rule.longest is not None:
            out.append("a" * (rule.longest + 1))
        if rule.closed or rule.known:
            out.append("none-of-these")
        if rule.nonempty:
            out.append("")
        if rule.pattern is not None:
            out.append("not allowed here")
        return out
    if isinstance(value, bool):
        return ["true"]
    if isinstance(value, int | float):
        out = []
        if rule.minimum is not None:
            out.append(type(value)(rule.minimum) - 1 if isinstance(value, int)
                       else math.nextafter(rule.minimum, -math.inf))
        if rule.maximum is not None:
            out.append(type(value)(rule.maximum) + 1 if isinstance(value, int)
                       else math.nextafter(rule.maximum, math.inf))
        if rule.positive:
            out.append(0.0)
        return out
    return []


def _mutations():
    """(id, msg_type, path to the field, bad value) for every bounded field of every body,
    nested objects too."""
    nested = {"model": p.ModelRef, "audio": p.AudioLevel, "mood": p.Mood}
    for msg_type, cls in p.BODY_TYPES.items():
        message = _reference(msg_type)
        for name, rule in p.RULES[cls].items():
            if name not in message["body"] or name == "counters":
                continue
            for bad in _past(rule, message["body"][name]):
                yield f"{msg_type}.{name}={str(bad)[:12]}", msg_type, (name,), bad
        for name, inner in nested.items():
            if not isinstance(message["body"].get(name), dict):
                continue
            for field, rule in p.RULES[inner].items():
                if field in message["body"][name]:
                    for bad in _past(rule, message["body"][name][field]):
                        yield (f"{msg_type}.{name}.{field}={str(bad)[:12]}", msg_type,
                               (name, field), bad)
    for field, rule in p.RULES[p.Header].items():
        message = _reference("event")
        for bad in _past(rule, message["header"][field]):
            yield f"header.{field}={str(bad)[:12]}", "event", ("header", field), bad


MUTATIONS = list(_mutations())


@pytest.mark.parametrize("msg_type,path,bad", [m[1:] for m in MUTATIONS],
                         ids=[m[0] for m in MUTATIONS])
def test_a_value_past_a_declared_bound_is_refused_by_decode_and_by_the_schema(
        msg_type, path, bad, validator):
    message = _reference(msg_type)
    assert validator.is_valid(message)
    p.Message.from_dict(message)  # the reference itself is taken
    where = message if path[0] == "header" else message["body"]
    for key in path[:-1]:
        where = where[key]
    where[path[-1]] = bad
    if path == ("header", "stream"):  # also the topic, so that only the stream is wrong
        message["topic"] = f"event.{bad}"
    assert not validator.is_valid(message), f"the schema takes {path}={bad!r}"
    with pytest.raises(ProtocolError):
        p.Message.from_dict(message)


def test_a_status_counter_past_int64_and_a_track_with_tags_but_no_windows_are_refused(
        validator):
    status = _reference("status")
    status["body"]["counters"]["samples"] = p.MAX_INTEGER + 1
    track = _reference("track")
    track["body"]["windows"] = 0
    silence = _reference("silence")
    silence["body"]["state"] = "on"  # ended is in an "off" only
    for message in (status, track, silence):
        assert not validator.is_valid(message)
        with pytest.raises(ProtocolError):
            p.Message.from_dict(message)


# -- what a real daemon sends ----------------------------------------------------------------


@pytest.fixture(scope="module")
def programme(tmp_path_factory) -> Path:
    """Music, 8 s of digital silence, music: scores, a silence on and off, a track."""
    rate = 16000
    music, _, _ = generate_clip(4, SyntheticConfig(sample_rate=rate, clip_seconds=4.0))
    quiet = np.zeros(8 * rate, dtype=np.float32)
    path = tmp_path_factory.mktemp("programme") / "programme.wav"
    write_audio(path, np.concatenate([music, quiet, music[: 2 * rate]]).astype(np.float32),
                rate)
    return path


def test_every_message_a_real_daemon_sends_validates(programme, tmp_path, validator):
    feed = f"tcp://127.0.0.1:{free_port()}"
    config = tmp_path / "daemon.toml"
    config.write_text(f'[publish]\nendpoint = "{feed}"\nheartbeat_s = 0.2\n'
                      '[health]\nsilence_s = 1.0\nloudness = true\n', encoding="utf-8")
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(feed)  # before the daemon binds: ZeroMQ connects when it is there
    proc = run_streamtag("run", "--config", str(config), "--control", "", "--source",
                         f"prog=file:{programme}", "--realtime", "--exit-when-done", "-q",
                         popen=True)
    got: list[list[bytes]] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if sub.poll(200):
                got.append(sub.recv_multipart())
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout=10) == 0, proc.stderr.read()
    finally:
        stop_process(proc)
        proc.communicate(timeout=10)
        sub.close()
        ctx.term()
    kinds: dict[str, int] = {}
    for frames in got:
        message = logical(frames)
        errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(message)]
        assert not errors, (message, errors)
        kinds[message["header"]["msg_type"]] = kinds.get(message["header"]["msg_type"], 0) + 1
    assert {"scores", "status", "heartbeat", "track", "silence"} <= set(kinds), kinds
    assert any(logical(f)["body"].get("audio", {}).get("momentary_lufs") is not None
               for f in got if f[0].startswith(b"scores."))


def test_a_heartbeat_says_its_interval_and_one_without_it_is_a_1_7_heartbeat(validator):
    from streamtag.wire.publisher import Publisher

    ctx = zmq.Context()
    publisher = Publisher("tcp://127.0.0.1:*", context=ctx, linger_ms=0)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"heartbeat")
    sub.connect(publisher.endpoint)
    try:
        frames = None
        for _ in range(200):  # PUB drops what it sends before the subscription arrives
            publisher.heartbeat(3, interval_s=0.5)
            if sub.poll(50):
                frames = sub.recv_multipart()
                break
        assert frames is not None, "no heartbeat arrived"
        body = json.loads(frames[2])
        assert body["interval_s"] == 0.5 and body["streams"] == 3
        assert validator.is_valid(logical(frames))
        assert p.decode(frames).body.interval_s == 0.5
        publisher.heartbeat(3)
        while sub.poll(2000):
            frames = sub.recv_multipart()
            if "interval_s" not in json.loads(frames[2]):
                break
        assert set(json.loads(frames[2])) == {"streams", "uptime_s"}
    finally:
        publisher.close()
        sub.close()
        ctx.term()
