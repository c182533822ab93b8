"""The protocol as JSON Schema (draft 2020-12) and as an AsyncAPI 3 document, made from
protocol.py's own declaration: each message's dataclass (its fields, their types, which are
required) and ``RULES`` (bounds, closed sets, lengths). Nothing here repeats a message's shape,
so the documents cannot drift from what ``decode`` takes. `streamtag protocol schema` prints
them; docs/protocol.md, "Schema and conformance", says what they do not check.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from streamtag.engine.tracks import TRACK_ACTIVE_SHARE
from streamtag.wire import protocol as p

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = f"urn:x-streamtag:protocol:{p.PROTOCOL_VERSION}:schema"
# AsyncAPI's name for a payload written in JSON Schema 2020-12
SCHEMA_FORMAT = "application/schema+json;version=draft-2020-12"

# The checks decode makes that JSON Schema cannot state: said in the schema's description and
# in docs/protocol.md (tests/wire/test_schema.py holds the vectors of each to them).
BEYOND_SCHEMA = {
    "frames": "exactly three ZeroMQ frames, each UTF-8 JSON (no NaN or Infinity) within its "
              "byte cap (docs/protocol.md, Bounds), checked before any JSON is parsed",
    "integers": "a field said to be an integer is written without a fraction (JSON Schema "
                "counts 1.0 an integer; a reader refuses it)",
    "topic": "the topic names the header's own stream: <msg_type>.<stream>",
    "per tag": "raw, smoothed, mean_raw, mean_smoothed and active_share have one value per "
               "entry of tags, and active names only tags in tags",
    "track active": "a track's active names exactly the tags whose active_share is over "
                    f"{TRACK_ACTIVE_SHARE}",
    "order": "end_s >= start_s and end_sample >= start_sample; a silence's time_s >= start_s "
             "and sample >= start_sample",
}


def _nullable(annotation: Any) -> tuple[Any, bool]:
    """The type inside ``X | None``, and whether None was in it."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        inner = args[0] if len(args) == 1 else typing.Union[tuple(args)]  # noqa: UP007
        return inner, len(args) < len(typing.get_args(annotation))
    return annotation, False


def _value_schema(annotation: Any, rule: p.Rule) -> dict[str, Any]:
    """The schema of one value of type ``annotation`` under ``rule`` (no None)."""
    out: dict[str, Any]
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is str:
        out = {"type": "string"}
        if rule.nonempty:
            out["minLength"] = 1
        if rule.longest is not None:
            out["maxLength"] = rule.longest
        if rule.pattern is not None:
            out["pattern"] = f"^(?:{rule.pattern})$"
        values_ = rule.closed or rule.known
        if values_ is not None:
            out["enum"] = list(values_)
            out["x-closed"] = rule.closed is not None
        return out
    if annotation in (int, float):
        out = {"type": "integer" if annotation is int else "number"}
        if rule.minimum is not None:
            out["minimum"] = rule.minimum
        if rule.maximum is not None:
            out["maximum"] = rule.maximum
        if rule.positive:
            out["exclusiveMinimum"] = 0
        return out
    origin = typing.get_origin(annotation)
    if origin is tuple:  # tuple[X, ...]: an array
        item = typing.get_args(annotation)[0]
        out = {"type": "array",
               "items": _value_schema(item, dataclasses.replace(rule, most=None, unique=False))}
        if rule.most is not None:
            out["maxItems"] = rule.most
        if rule.unique:
            out["uniqueItems"] = True
        return out
    if origin in (Mapping, dict):  # a status's counters: numbers by name
        integer: dict[str, Any] = {"type": "integer"}
        if rule.minimum is not None:
            integer["minimum"] = rule.minimum
        if rule.maximum is not None:
            integer["maximum"] = rule.maximum
        out = {"type": "object",
               "additionalProperties": {"anyOf": [integer, {"type": "number",
                                                            "not": {"type": "integer"}}]}}
        if rule.longest is not None:
            out["propertyNames"] = {"maxLength": rule.longest}
        if rule.most is not None:
            out["maxProperties"] = rule.most
        return out
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return object_schema(annotation)
    raise TypeError(f"no schema for a field of type {annotation!r}")


def object_schema(cls: type) -> dict[str, Any]:
    """The schema of one dataclass of the wire: its fields, those without a default required,
    unknown members allowed (a minor version adds fields)."""
    hints = typing.get_type_hints(cls)
    rules = p.RULES.get(cls, {})
    unknown = set(rules) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise TypeError(f"protocol RULES of {cls.__name__} name no field: {sorted(unknown)}")
    properties: dict[str, Any] = {}
    required = []
    later: list[str] = []
    for f in dataclasses.fields(cls):
        rule = rules.get(f.name, p.Rule())
        inner, nullable = _nullable(hints[f.name])
        schema = _value_schema(inner, rule)
        if nullable:
            schema = {"anyOf": [schema, {"type": "null"}]}
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
        elif f.default is not None and f.default is not dataclasses.MISSING:
            schema["default"] = list(f.default) if isinstance(f.default, tuple) else f.default
        if rule.since is not None:
            schema["x-since"] = rule.since
        if rule.at_least is not None:
            later.append(f"{f.name} >= {rule.at_least}")
        properties[f.name] = schema
    out: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
    if later:
        out["$comment"] = "also, checked by readers: " + "; ".join(later)
    return out


def header_schema() -> dict[str, Any]:
    out = object_schema(p.Header)
    majors = "|".join(str(m) for m in p.READABLE_MAJORS)
    # a major this version reads, any minor
    out["properties"]["version"]["pattern"] = f"^(?:{majors})\\.(?:0|[1-9][0-9]{{0,8}})$"
    out["properties"]["stream"] = {"anyOf": [
        {"type": "string", "pattern": f"^(?:{p.STREAM_ID_PATTERN})$"}, {"const": ""}]}
    return out


def _body_extras(msg_type: str, schema: dict[str, Any]) -> dict[str, Any]:
    """What a body's own checks add that a schema can say: the cross-field rules expressible
    as conditions."""
    conditions = []
    if msg_type == p.SILENCE:  # ended only in an "off"
        conditions.append({"if": {"required": ["ended"],
                                  "properties": {"ended": {"type": "boolean"}}},
                           "then": {"properties": {"state": {"const": "off"}}}})
    if msg_type == p.TRACK:  # no windows, no tags
        conditions.append({"if": {"properties": {"windows": {"const": 0}}},
                           "then": {"properties": {"tags": {"maxItems": 0}}}})
    if conditions:
        schema = {**schema, "allOf": conditions}
    return schema


def body_schemas() -> dict[str, dict[str, Any]]:
    return {msg_type: _body_extras(msg_type, object_schema(cls))
            for msg_type, cls in p.BODY_TYPES.items()}


def _topic_schema(msg_type: str) -> dict[str, Any]:
    if msg_type == p.HEARTBEAT:
        return {"const": p.HEARTBEAT}
    return {"type": "string", "pattern": f"^{msg_type}\\.(?:{p.STREAM_ID_PATTERN})$",
            "maxLength": p.MAX_TOPIC_BYTES}


def json_schema() -> dict[str, Any]:
    """One document: a logical message ``{topic, header, body}`` (frames 0, 1 and 2, each
    frame's JSON parsed), with each part under ``$defs`` (``#/$defs/header``,
    ``#/$defs/scores``, ...) for a reader that checks frames one by one."""
    bodies = body_schemas()
    defs: dict[str, Any] = {"header": header_schema(), **bodies}
    branches = []
    for msg_type in p.MSG_TYPES:
        stream: dict[str, Any] = ({"const": ""} if msg_type == p.HEARTBEAT else
                                  {"type": "string", "pattern": f"^(?:{p.STREAM_ID_PATTERN})$"})
        branches.append({
            "if": {"properties": {"header": {"properties": {"msg_type": {"const": msg_type}},
                                             "required": ["msg_type"]}}},
            "then": {"properties": {"topic": _topic_schema(msg_type),
                                    "header": {"properties": {"stream": stream}},
                                    "body": {"$ref": f"#/$defs/{msg_type}"}}}})
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": SCHEMA_ID,
        "title": f"streamtag wire protocol {p.PROTOCOL_VERSION}: a logical message",
        "description": ("Made from streamtag/wire/protocol.py by `streamtag protocol schema`. "
                        "A message is three ZeroMQ frames: the topic, the header's JSON and "
                        "the body's JSON; this validates them parsed, as {topic, header, body}. "
                        "Sets marked x-closed true refuse values they do not list; x-since is "
                        "the protocol version that added a field. Readers check also what a "
                        "schema cannot say: " + "; ".join(BEYOND_SCHEMA.values()) + "."),
        "type": "object",
        "properties": {"topic": {"type": "string", "maxLength": p.MAX_TOPIC_BYTES},
                       "header": {"$ref": "#/$defs/header"}, "body": {"type": "object"}},
        "required": ["topic", "header", "body"],
        "allOf": branches,
        "$defs": defs,
    }


# ---------------------------------------------------------------- the control socket

_HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}


def control_schemas() -> dict[str, dict[str, Any]]:
    """The control socket's frames: a request, a challenge's answer, a signature frame and a
    reply (docs/protocol.md, Control socket)."""
    return {
        "request": {"type": "object", "required": ["cmd"],
                    "properties": {"cmd": {"type": "string"}},
                    "description": f"one frame of at most {p.MAX_REQUEST_BYTES} bytes; the "
                                   "command's arguments beside cmd"},
        "signature": {"type": "object", "required": ["nonce", "mac"],
                      "properties": {"nonce": _HEX64, "mac": _HEX64},
                      "description": "the frame before a signed request: HMAC-SHA256 of the "
                                     "nonce and the request frame under the daemon's token"},
        "reply_signature": {"type": "object", "required": ["mac"],
                            "properties": {"mac": _HEX64}},
        "reply": {"type": "object", "required": ["ok"],
                  "properties": {"ok": {"type": "boolean"}, "error": {"type": "string"}},
                  "if": {"properties": {"ok": {"const": False}}},
                  "then": {"required": ["error"]},
                  "description": f"one frame of at most {p.MAX_REPLY_BYTES} bytes; the "
                                 "command's results beside ok"},
    }


def _payload(schema: dict[str, Any]) -> dict[str, Any]:
    return {"schemaFormat": SCHEMA_FORMAT, "schema": schema}


def asyncapi() -> dict[str, Any]:
    """An AsyncAPI 3.0 document of the feed (a PUB socket, one channel per topic) and the
    control socket (request and reply), its payloads the JSON Schema's parts."""
    bodies = body_schemas()
    header = header_schema()
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for msg_type in p.MSG_TYPES:
        messages[msg_type] = {
            "name": msg_type,
            "title": f"{msg_type} message",
            "summary": (p.BODY_TYPES[msg_type].__doc__ or "").strip().split("\n")[0],
            "contentType": "application/json",
            "headers": _payload(header),
            "payload": _payload(bodies[msg_type]),
        }
        address = p.HEARTBEAT if msg_type == p.HEARTBEAT else f"{msg_type}.{{stream}}"
        channel: dict[str, Any] = {
            "address": address, "servers": [{"$ref": "#/servers/feed"}],
            "messages": {msg_type: {"$ref": f"#/components/messages/{msg_type}"}},
            "description": f"ZeroMQ topic (frame 0) {address}; subscribe by byte prefix"}
        if msg_type != p.HEARTBEAT:
            channel["parameters"] = {"stream": {
                "description": f"a stream id: {p.STREAM_ID_PATTERN}"}}
        channels[msg_type] = channel
        operations[f"receive_{msg_type}"] = {
            "action": "receive", "channel": {"$ref": f"#/channels/{msg_type}"},
            "messages": [{"$ref": f"#/channels/{msg_type}/messages/{msg_type}"}]}
    control = control_schemas()
    for name in ("request", "reply"):
        messages[f"control_{name}"] = {"name": f"control_{name}",
                                       "contentType": "application/json",
                                       "payload": _payload(control[name])}
    channels["control"] = {
        "address": None, "servers": [{"$ref": "#/servers/control"}],
        "messages": {name: {"$ref": f"#/components/messages/control_{name}"}
                     for name in ("request", "reply")},
        "description": "one REQ connection: a challenge, then each request signed (two "
                       "frames: the signature, then the request) and its reply signed back; "
                       "with CURVE admin keys, one frame each way"}
    operations["control"] = {
        "action": "send", "channel": {"$ref": "#/channels/control"},
        "messages": [{"$ref": "#/channels/control/messages/request"}],
        "reply": {"channel": {"$ref": "#/channels/control"},
                  "messages": [{"$ref": "#/channels/control/messages/reply"}]}}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "streamtag", "version": p.PROTOCOL_VERSION,
                 "description": "A streamtag daemon's feed and control socket over ZeroMQ "
                                "(docs/protocol.md). Made from streamtag/wire/protocol.py by "
                                "`streamtag protocol schema --asyncapi`."},
        "defaultContentType": "application/json",
        "servers": {
            "feed": {"host": "127.0.0.1:5556", "protocol": "zmq",
                     "description": "the daemon's PUB socket (or a proxy's XPUB backend): "
                                    "three frames a message, topic, header and body"},
            "control": {"host": "127.0.0.1:5557", "protocol": "zmq",
                        "description": "the daemon's ROUTER socket, for REQ clients"},
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }
