"""``streamtag listen``: a daemon's messages printed live, one line each, or only what plays.

`format_message` is the line of one message (``streamtag demo`` prints the same lines);
`NowPlaying` follows titles and finished tracks for ``--tracks``; `run_listen` is the command.
Text from outside (titles, tag names, errors, sessions) is shown without the control
characters and escape sequences a terminal would act on (``terminal_text``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TextIO, assert_never

from streamtag.commands import EXIT_USAGE, terminal_json, terminal_text, use_color
from streamtag.commands.flags import (
    add_daemon_client_flags,
    count_at_least_1,
    seconds_above_0,
    zmq_endpoint,
)
from streamtag.commands.status import ask_daemon, client_credentials
from streamtag.errors import ProtocolError
from streamtag.text import counted
from streamtag.wire.sockets import DEFAULT_FEED_ENDPOINT

if TYPE_CHECKING:
    import zmq

    from streamtag.wire.protocol import Message, SilenceBody, TrackBody
    from streamtag.wire.security import ClientCurve
    from streamtag.wire.subscriber import ReceivedMessage

# Silence this long from an endpoint whose heartbeats are subscribed to is said once: a daemon
# sends one every 2 s by default ([publish] heartbeat_s; a proxy passes them on), so nothing in
# three of them means nothing publishes there, or CURVE keys missing or not let in (which hear
# nothing at all).
NOTHING_HEARD_S = 6.0
# A --duration at least this long that heard nothing at all says so as it ends (a heartbeat
# every 2 s, and a moment to connect)
NOTHING_HEARD_MIN_S = 3.0
# Characters of a refused message's topic that -v shows (a topic is at most 256 bytes)
MAX_SHOWN_TOPIC = 256

_BOLD, _GREEN, _RED, _RESET = "\033[1m", "\033[32m", "\033[31m", "\033[0m"

# What --tracks remembers is bounded whatever a feed without CURVE keys carries: the titles of
# the MAX_STREAMS most recently heard streams, and their last tracks only where a track is at
# most MAX_KEPT_TRACK_BYTES on the wire (a 56-tag model's is 3 kB); bigger ones are printed,
# not kept.
MAX_STREAMS = 4096
MAX_KEPT_TRACK_BYTES = 64 * 1024


def _clock(unix_s: float) -> str:
    ms = int((unix_s % 1) * 1000)
    return time.strftime("%H:%M:%S", time.localtime(unix_s)) + f".{ms:03d}"


def _shown(text: str) -> str:
    """Text from outside as one line of a terminal may hold it."""
    return terminal_text(text, one_line=True)


def _names(names: Iterable[str]) -> str:
    return _shown(", ".join(names)) or "-"


def _title(title: str | None) -> str:
    return "(untitled)" if title is None else f'"{_shown(title)}"'


def _track_summary(body: TrackBody) -> str:
    """Windows, the tags active for most of the track and the top mean smoothed scores."""
    ranked = sorted(zip(body.mean_smoothed, body.tags, strict=True), reverse=True)[:3]
    top = _shown(", ".join(f"{tag} {score:.2f}" for score, tag in ranked)) or "-"
    return f"{body.windows} windows  mostly: {_names(body.active)}  mean: {top}"


def _span(start_s: float, end_s: float) -> str:
    def clock(seconds: float) -> str:
        # rounded to tenths first: 59.9987 s reads 1:00.0, not 0:60.0
        minutes, tenths = divmod(round(max(0.0, seconds) * 10), 600)
        return f"{minutes}:{tenths / 10:04.1f}"
    return f"{clock(start_s)}-{clock(end_s)}"


def format_message(message: ReceivedMessage, color: bool = False) -> str:
    """One human-readable line for a message."""
    from streamtag.wire.protocol import (
        EventBody,
        HeartbeatBody,
        ScoresBody,
        SilenceBody,
        StatusBody,
        TrackBody,
    )

    def paint(text: str, *codes: str) -> str:
        return "".join(codes) + text + _RESET if color else text

    head = f"{_clock(message.sent_at)}  {message.stream or '-':<12} #{message.seq:<6}"
    match message.body:
        case ScoresBody() as body:
            ranked = sorted(zip(body.smoothed, body.tags, strict=True), reverse=True)[:3]
            top = _shown(", ".join(f"{tag} {score:.2f}" for score, tag in ranked)) or "-"
            text = (f"{body.start_s:9.2f}-{body.end_s:.2f} s  active: "
                    f"{_names(body.active)}  top: {top}  ({body.latency_ms:.0f} ms)")
            if body.audio is not None and body.audio.short_term_lufs is not None:
                text += f"  {body.audio.short_term_lufs:.1f} LUFS"  # [health] loudness
        case EventBody() as body:
            text = paint(f">>> {_shown(body.tag)} {body.state.upper()}", _BOLD,
                         _GREEN if body.state == "on" else _RED)
            text += f"  score {body.score:.2f} at {body.time_s:.2f} s"
        case StatusBody() as body:
            text = paint(f"status {body.state}", _BOLD,
                         *([_RED] if body.state == "failed" else []))
            if body.error:
                text += f"  error: {_shown(body.error)}"
            if body.title:
                text += f'  title: "{_shown(body.title)}"'
            if body.station:
                text += f'  station: "{_shown(body.station)}"'
            if body.source:
                text += f"  source: {_shown(body.source)}"
            if body.counters:
                text += "  " + _shown(" ".join(f"{k}={v}"
                                               for k, v in sorted(body.counters.items())))
        case TrackBody() as body:
            text = paint(f"track {_title(body.title)}", _BOLD)
            text += (f"  {body.start_s:.2f}-{body.end_s:.2f} s  {_track_summary(body)}  "
                     f"({body.reason})")
        case SilenceBody() as body:
            text = _silence_text(body, paint)
        case HeartbeatBody() as body:
            text = (f"heartbeat  session {_shown(message.session[:8])}  up "
                    f"{body.uptime_s:.0f} s  {counted(body.streams, 'stream')}")
        case unknown:
            assert_never(unknown)  # a Message holds one of the bodies above
    if message.gap:
        text += paint(f"  [{message.gap} lost before this]", _RED)
    if message.restarted:
        text += paint(f"  [publisher restarted: session {_shown(message.session[:8])}]", _BOLD)
    return head + " " + text


def _silence_text(body: SilenceBody, paint: Callable[..., str]) -> str:
    tone = body.cause == "tone"
    if body.state == "on":
        return paint(">>> STUCK TONE" if tone else ">>> SILENCE", _BOLD, _RED) + (
            f"  since {body.start_s:.2f} s (" + (
                "a steady tone, no onset" if tone else f"below {body.threshold_dbfs:g} dBFS")
            + f" for {body.duration_s:.1f} s)")
    if body.ended:  # no sound came back: the stream ended in the dead air
        return paint(">>> stream ended", _BOLD) + (
            f"  {'stuck tone' if tone else 'silent'} from {body.start_s:.2f} s to its "
            f"end at {body.time_s:.2f} s ({body.duration_s:.1f} s)")
    return paint(">>> sound again", _BOLD, _GREEN) + (
        f"  at {body.time_s:.2f} s after {body.duration_s:.1f} s of "
        + ("a stuck tone" if tone else "silence"))


class NowPlaying:
    """Each stream's current title and its last tracks, from status and track messages (and a
    control `status` reply for a late start): what ``streamtag listen --tracks`` prints."""

    def __init__(self, keep: int = 5, streams: frozenset[str] | None = None) -> None:
        self.keep = keep
        self.streams = streams  # None: every stream
        # the least recently heard first; both forget the same streams (MAX_STREAMS)
        self.titles: OrderedDict[str, str | None] = OrderedDict()
        self.tracks: dict[str, list[TrackBody]] = {}
        self.forgotten = 0  # streams forgotten to stay within MAX_STREAMS

    def _heard(self, stream: str) -> None:
        if stream in self.titles:
            self.titles.move_to_end(stream)
            return
        self.titles[stream] = None
        if len(self.titles) > MAX_STREAMS:
            old, _ = self.titles.popitem(last=False)
            self.tracks.pop(old, None)
            self.forgotten += 1

    def apply(self, message: Message) -> list[str]:
        """Lines to print for one message: a new title, a finished track, or nothing."""
        from streamtag.wire.protocol import StatusBody, TrackBody

        stream = message.stream
        match message.body:
            case StatusBody() as body:
                known = self.titles.get(stream)
                self._heard(stream)
                if known == body.title:
                    return []  # no title yet, or the same one
                self.titles[stream] = body.title
                return [f"{_clock(message.sent_at)}  {stream:<12} now playing "
                        f"{_title(body.title)}"]
            case TrackBody() as body:
                self._heard(stream)
                if getattr(message, "size", 0) <= MAX_KEPT_TRACK_BYTES:
                    last = self.tracks.setdefault(stream, [])
                    last.append(body)
                    del last[:-self.keep]
                return [f"{_clock(message.sent_at)}  {stream:<12} played {_title(body.title)}  "
                        f"{_span(body.start_s, body.end_s)}  {_track_summary(body)}"]
            case _:
                return []

    def apply_status_reply(self, reply: dict[str, Any]) -> list[str]:
        """The daemon's view at the start: current titles and the last tracks it lists."""
        from streamtag.wire.protocol import TrackBody

        lines = []
        for stream, state in sorted((reply.get("streams") or {}).items()):
            if self.streams is not None and stream not in self.streams:
                continue
            for fields in (state.get("tracks") or [])[-self.keep:]:
                try:  # fields this reader does not know (a newer daemon's) are left out
                    body = TrackBody.from_dict(fields)
                except ProtocolError:
                    continue  # not a track as this protocol reads one: not ours to show
                self._heard(stream)
                self.tracks.setdefault(stream, []).append(body)
                lines.append(f"{'earlier':<12}  {_shown(str(stream)):<12} played "
                             f"{_title(body.title)}  "
                             f"{_span(body.start_s, body.end_s)}  {_track_summary(body)}")
            title = state.get("title")
            title = title if isinstance(title, str) else None
            self._heard(stream)
            self.titles[stream] = title
            if title is None and state.get("state") == "starting":
                # its source has not opened yet: what it plays is not known, not untitled
                lines.append(f"{'now':<12}  {_shown(str(stream)):<12} starting")
                continue
            lines.append(f"{'now':<12}  {_shown(str(stream)):<12} now playing {_title(title)}")
        return lines


def refused_text(frames: Sequence[Any], error: Exception) -> str:
    """One line naming a refused message (its topic, as safe to show) and why."""
    topic = frames[0] if frames else b""
    shown = (topic[:MAX_SHOWN_TOPIC].decode("utf-8", "replace")
             if isinstance(topic, bytes) else "")
    return terminal_text(f"refused a message on topic {shown!r} "
                         f"({len(frames)} frames): {error}", one_line=True)


def say_refused(frames: Sequence[Any], error: Exception) -> None:
    print(f"streamtag listen: {refused_text(frames, error)}", file=sys.stderr, flush=True)


def run_listen(endpoint: str | Sequence[str], streams: Iterable[str] | None = None,
               as_json: bool = False, count: int | None = None, duration: float | None = None,
               out: TextIO | None = None, *, topics: Iterable[str] | None = None,
               context: zmq.Context | None = None, curve: ClientCurve | None = None,
               tracks: bool = False, control: str | None = None,
               wait_s: float = 30.0, nothing_heard_s: float = NOTHING_HEARD_S,
               token: str | None = None, verbose: bool = False,
               replay: Sequence[str] | None = None) -> int:
    """Print received messages until `count` or `duration` or Ctrl-C.

    One line per message: human-readable, or with `as_json` one JSON object per line with the
    keys topic, header, body, gap and restarted. With `tracks`, only what is playing: a line
    per title change ("now playing") and per finished track, after the daemon's current
    titles and last tracks when `control` (its control endpoint) is given, waiting up to
    `wait_s` seconds for a daemon that does not answer yet; `count` then counts those lines.
    When heartbeats are among the topics and nothing at all arrives in `nothing_heard_s`
    seconds, says so once on stderr, with what to check, and goes on listening. With
    `streams`, the daemon's heartbeats are listened for (that check) but not printed.
    ``topics``: those subscribed to (default: all). ``verbose``: each message refused (not
    of the protocol, past a bound, of a type or major version this reader does not know) is
    named on stderr with why. ``replay``: daemons' replay sockets, which give each stream's
    state first and what the feed lost (``Subscriber``). Returns the exit status.
    """
    from streamtag.wire.protocol import HEARTBEAT, HeartbeatBody, canonical_json
    from streamtag.wire.subscriber import ALL_TOPICS, Subscriber

    if tracks:
        topics = ("status", "track")
    elif topics is None:
        topics = ALL_TOPICS
    out = sys.stdout if out is None else out
    color = not as_json and use_color(out)
    deadline = None if duration is None else time.monotonic() + duration
    printed = 0
    try:
        subscriber = Subscriber(endpoint, streams, topics, context=context, curve=curve,
                                replay=replay)
    except (ValueError, OSError) as exc:
        print(f"streamtag listen: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if verbose:
        subscriber.on_refused = say_refused
    playing = NowPlaying(streams=subscriber.streams) if tracks else None
    try:
        with subscriber:
            if playing is not None and control is not None:
                try:
                    reply = ask_daemon(control, {"cmd": "status"}, wait_s, curve=curve,
                                       context=context, token=token,
                                       on_wait=lambda line: print(f"streamtag listen: {line}",
                                                                  file=sys.stderr, flush=True))
                except (TimeoutError, OSError, ProtocolError) as exc:
                    print(f"streamtag listen: no current titles from {control}: {exc}",
                          file=sys.stderr)
                else:
                    if reply.get("ok"):
                        lines = playing.apply_status_reply(reply)
                        for line in lines:
                            out.write(line + "\n")
                        out.flush()
                        printed += len(lines)
                    else:
                        print(f"streamtag listen: no current titles from {control}: the "
                              f"daemon refused: {_shown(str(reply.get('error')))}",
                              file=sys.stderr)
            started, heard = time.monotonic(), False
            watch_silence = HEARTBEAT in subscriber.topics
            where = endpoint if isinstance(endpoint, str) else ", ".join(endpoint)

            def nothing_heard(seconds: float, then: str) -> None:
                print(f"streamtag listen: nothing heard from {where} in {seconds:g} s, not "
                      "even a heartbeat (a daemon sends one every 2 s by default): is one "
                      "publishing there and, if it uses CURVE keys, are --server-key and "
                      "--client-key given, with a client key the daemon lets in? " + then,
                      file=sys.stderr, flush=True)

            while count is None or printed < count:
                if watch_silence and not heard and \
                        time.monotonic() - started >= nothing_heard_s:
                    watch_silence = False
                    nothing_heard(nothing_heard_s, "Still listening.")
                wait_ms = 500
                if deadline is not None and duration is not None:
                    left_ms = (deadline - time.monotonic()) * 1e3
                    if left_ms <= 0:
                        # a --duration shorter than the warning's wait, past a heartbeat's
                        if watch_silence and not heard and duration >= NOTHING_HEARD_MIN_S:
                            nothing_heard(round(duration, 1), "Stopped (--duration).")
                        break
                    wait_ms = min(wait_ms, math.ceil(left_ms))
                message = subscriber.recv(wait_ms)
                if message is None:
                    continue
                heard = True
                if subscriber.streams is not None and isinstance(message.body, HeartbeatBody):
                    continue  # the daemon's, not the streams asked for: heard, not shown
                if as_json:
                    lines = [terminal_json(canonical_json(message.to_dict()).decode("utf-8"))]
                elif playing is not None:
                    lines = playing.apply(message)
                else:
                    lines = [format_message(message, color)]
                for line in lines:
                    out.write(line + "\n")
                out.flush()
                printed += len(lines)
    except KeyboardInterrupt:
        pass  # the usual way to end a live view
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("listen", help="print a daemon's messages live")
    p.add_argument("endpoint", nargs="?", default=DEFAULT_FEED_ENDPOINT, type=zmq_endpoint)
    p.add_argument("--stream", action="append", help="only this stream; repeatable")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--count", type=count_at_least_1, help="stop after this many messages")
    p.add_argument("--duration", type=seconds_above_0, help="stop after this many seconds")
    p.add_argument("--tracks", action="store_true",
                   help="only what is playing: each title change and each finished track's "
                        "summary")
    p.add_argument("--replay", action="append", metavar="ENDPOINT", type=zmq_endpoint,
                   help="a daemon's replay socket ([publish] replay_endpoint): each stream's "
                        "status, title, active tags and mood first, and what the feed lost "
                        "asked for there and printed in its place; repeatable")
    add_daemon_client_flags(p, control="with --tracks: the daemon's control endpoint, to start "
                                       "with its current titles and last tracks", wait=30.0)
    p.set_defaults(func=cmd_listen)


def cmd_listen(args: argparse.Namespace) -> int:
    credentials = client_credentials(
        args, lambda line: print(f"streamtag listen: {line}", file=sys.stderr))
    if credentials is None:
        return EXIT_USAGE
    curve, token = credentials
    return run_listen(args.endpoint, streams=args.stream or None, as_json=args.json,
                      count=args.count, duration=args.duration, curve=curve,
                      tracks=args.tracks, control=args.control, wait_s=args.wait, token=token,
                      verbose=args.verbose > 0, replay=args.replay)
