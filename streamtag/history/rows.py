"""What the recorder stores of each message: the rows (and a block's window) that hold it, as
pure functions of the decoded message. No I/O, no threads, nothing remembered: the recorder
(history.recorder) keeps those, and says which of these each message type takes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from streamtag.history import blocks, schema
from streamtag.wire.protocol import (
    EventBody,
    Header,
    HeartbeatBody,
    ModelRef,
    ScoresBody,
    SilenceBody,
    StatusBody,
    TrackBody,
    scores_f64,
)

_NO_AUDIO = (None, None, None, None, None)


def text(value: str | None) -> str | None:
    """``value`` as PostgreSQL text holds it: without NUL (JSON strings on the wire may have
    one)."""
    return value.replace("\x00", "\ufffd") if value and "\x00" in value else value


def names(values: Sequence[str]) -> str:
    """Tag names or mood words as stored: a JSON array of texts."""
    return schema.pack_names([text(v) or "" for v in values])  # ("" only for "")


def model_key(model: ModelRef, tags: Sequence[str]) -> tuple[str, str, str]:
    """A model as the `models` table holds it: (name, hash, its tags as a JSON array)."""
    return text(model.name), text(model.hash), names(tags)  # type: ignore[return-value]


def message_row(header: Header, session: str) -> dict[str, Any]:
    """The columns every message table shares."""
    return {"stream": header.stream, "session": session, "seq": header.seq,
            "sent_at": header.sent_at}


def gap_row(stream: str, session: str, msg_type: str, first_seq: int, missed: int,
            cause: str, now: float) -> dict[str, Any]:
    return {"stream": stream, "session": session, "msg_type": msg_type,
            "first_seq": first_seq, "missed": missed, "cause": cause, "detected_at": now}


def session_row(header: Header, session: str, previous: str | None,
                restarted: bool) -> dict[str, Any]:
    """A stream's session as first heard; ``previous``: the stream's session before it."""
    return {"stream": header.stream, "session": session, "first_sent_at": header.sent_at,
            "previous_session": previous, "restarted": restarted}


def daemon_row(header: Header, session: str, body: HeartbeatBody) -> dict[str, Any]:
    return {"session": session, "first_sent_at": header.sent_at,
            "last_sent_at": header.sent_at, "last_seq": header.seq,
            "uptime_s": body.uptime_s, "streams": body.streams}


def event_row(header: Header, session: str, body: EventBody) -> dict[str, Any]:
    return {**message_row(header, session), "tag": text(body.tag), "state": body.state,
            "score": body.score, "time_s": body.time_s, "sample": body.sample}


def status_row(header: Header, session: str, body: StatusBody,
               counters: str) -> dict[str, Any]:
    """``counters``: the body's counters as `stored_counters` gives them."""
    return {**message_row(header, session), "state": body.state, "error": text(body.error),
            "title": text(body.title), "source": text(body.source),
            "station": text(body.station), "heard_from_start": body.heard_from_start,
            "counters": counters}


def track_row(header: Header, session: str, body: TrackBody,
              model: tuple[str, str, str]) -> dict[str, Any]:
    """``model``: its `model_key`, which the recorder turns into the model's id."""
    return {**message_row(header, session), "model_id": model, "title": text(body.title),
            "reason": body.reason, "start_s": body.start_s, "end_s": body.end_s,
            "start_sample": body.start_sample, "end_sample": body.end_sample,
            "started_at": body.started_at, "ended_at": body.ended_at,
            "windows": body.windows, "mean_raw": schema.pack_scores(body.mean_raw),
            "mean_smoothed": schema.pack_scores(body.mean_smoothed),
            "active_share": schema.pack_scores(body.active_share),
            "active": names(body.active), "heard_from_start": body.heard_from_start,
            "loudness_lufs": body.loudness_lufs}


def silence_row(header: Header, session: str, body: SilenceBody) -> dict[str, Any]:
    return {**message_row(header, session), "state": body.state, "time_s": body.time_s,
            "sample": body.sample, "start_s": body.start_s,
            "start_sample": body.start_sample, "duration_s": body.duration_s,
            "threshold_dbfs": body.threshold_dbfs, "cause": body.cause}


def window(header: Header, body: ScoresBody, active: str,
           mood: str | None) -> blocks.Window:
    """What a block keeps of a scores message. ``active`` and ``mood``: its active tags and
    mood words as `names` gives them (a recorder reuses them: they repeat from window to
    window). OverflowError for a value a block cannot hold."""
    audio, feeling = body.audio, body.mood
    levels = _NO_AUDIO if audio is None else (
        audio.rms_dbfs, audio.peak_dbfs, audio.clipped, audio.onset_rate_hz, audio.energy)
    made = blocks.Window._make((
        header.seq, header.sent_at, body.start_s, body.end_s, body.start_sample,
        body.end_sample, body.raw, body.smoothed, active, body.latency_ms, *levels,
        None if feeling is None else mood, None if feeling is None else feeling.valence,
        None if feeling is None else feeling.arousal,
        None if audio is None else audio.momentary_lufs,
        None if audio is None else audio.short_term_lufs, body.content, scores_f64(body)))
    blocks.check_window(made)
    return made


def stored_counters(counters: Mapping[str, int | float] | None,
                    most_chars: int) -> tuple[str, int]:
    """A status's counters as JSON within ``most_chars`` (the first by name), and how many
    of them that keeps."""
    every = json.dumps(counters, ensure_ascii=False, sort_keys=True)
    if len(every) <= most_chars:
        return every, len(counters or {})
    kept: dict[str, int | float] = {}
    used = 2
    for key in sorted(counters or {}):
        entry = len(json.dumps({key: counters[key]}, ensure_ascii=False))  # type: ignore[index]
        if used + entry > most_chars:
            break
        kept[key] = counters[key]  # type: ignore[index]
        used += entry - 1  # the braces once, a comma between entries
    return json.dumps(kept, ensure_ascii=False, sort_keys=True), len(kept)
