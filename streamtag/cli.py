"""The ``streamtag`` command line: the parser, and dispatch to the command modules
(streamtag.commands.NAME), which hold each command's terminal code."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator

from streamtag.wire.proxy import DEFAULT_BACKEND, DEFAULT_FRONTEND, MAX_MESSAGE_BYTES
from streamtag.wire.sockets import DEFAULT_CONTROL_ENDPOINT, DEFAULT_FEED_ENDPOINT

# Packages of the extras (pyproject.toml) that a command may need: what it is, and the extra.
# a module a command may miss → (what it is, the pip requirement that brings it)
OPTIONAL = {"torch": ("PyTorch", "torch"), "sklearn": ("scikit-learn", "scikit-learn"),
            "matplotlib": ("matplotlib", "matplotlib")}


def _command(name: str) -> Callable[[argparse.Namespace], int]:
    """``cmd_NAME`` of streamtag.commands.NAME, imported when the command runs: parsing loads
    none of the commands' dependencies (the daemon's alone take more than a second)."""
    def run(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(f"streamtag.commands.{name}"), f"cmd_{name}")(args)

    return run


def _add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model file or installed model name, e.g. musicnn-msd "
                        "(default: the shipped model)")


def _add_backend(parser: argparse.ArgumentParser, default: str | None) -> None:
    from streamtag.model import BACKENDS

    parser.add_argument("--backend", default=default, choices=BACKENDS,
                        help="what runs the model: auto (ONNX Runtime on the CPU, TorchScript "
                             "on CUDA), onnxruntime or torch")


def _add_precision(parser: argparse.ArgumentParser, default: str | None) -> None:
    from streamtag.model import PRECISIONS

    parser.add_argument("--precision", default=default, choices=PRECISIONS,
                        help="fp32, or int8: the model file's int8 graph on ONNX Runtime, made "
                             "by `streamtag models quantize` (docs/operations.md)")


def _add_client_keys(parser: argparse.ArgumentParser, whose: str) -> None:
    parser.add_argument("--server-key", metavar="FILE",
                        help=f"{whose} public key file (NAME.key), for CURVE")
    parser.add_argument("--client-key", metavar="FILE",
                        help="this client's secret key file (NAME.key_secret)")


def port_number(text: str) -> int:
    """A flag's TCP port: an integer 0-65535 (argparse names the flag in its error)."""
    try:
        port = int(text, 10)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port: give a whole number "
                                         "from 1 to 65535 (0: off, or any free port)")
    return port


def count_at_least_1(text: str) -> int:
    """A flag's count: a whole number >= 1 (argparse names the flag in its error)."""
    try:
        value = int(text, 10)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count: give a whole number, 1 or "
                                         "more")
    return value


def _seconds(text: str, zero_allowed: bool) -> float:
    """A flag's span of time in seconds: finite, and above 0 or (``zero_allowed``) 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    not_below = 0 <= value if zero_allowed else 0 < value
    if not (not_below and value < float("inf")):
        wanted = "seconds, 0 or more" if zero_allowed else "seconds above 0"
        raise argparse.ArgumentTypeError(f"{text!r} is not a span of time: give a number of "
                                         f"{wanted}")
    return value


def seconds_above_0(text: str) -> float:
    """A flag's span of time: a number of seconds > 0 (argparse names the flag)."""
    return _seconds(text, zero_allowed=False)


def seconds_from_0(text: str) -> float:
    """A flag's wait: a number of seconds >= 0 (0: do not wait)."""
    return _seconds(text, zero_allowed=True)


def block_seconds(text: str) -> float:
    """record --block-s: seconds above 0, at most a minute (a block holds one)."""
    value = _seconds(text, zero_allowed=False)
    if value > 60:
        raise argparse.ArgumentTypeError(f"{text!r}: a block holds at most a minute of a "
                                         "stream; give 60 seconds or fewer")
    return value


def zmq_endpoint(text: str) -> str:
    """A ZeroMQ endpoint flag, checked where a mistyped one would fail later with a vague
    error (the config file's check: a tcp:// port must be 1-65535 or *)."""
    from streamtag.daemon.config import check_endpoint
    from streamtag.errors import ConfigError

    try:
        check_endpoint("the endpoint", text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def stream_id(text: str) -> str:
    """A stream id argument (argparse names the argument in its error)."""
    from streamtag.errors import ProtocolError
    from streamtag.wire.protocol import validate_stream_id

    try:
        return validate_stream_id(text)
    except ProtocolError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def zmq_endpoint_or_off(text: str) -> str:
    """``zmq_endpoint``, or "" for off."""
    return text if text == "" else zmq_endpoint(text)


def source_flag(text: str) -> str:
    """A ``--source`` flag, ``[ID=]SPEC``: an ID that is not a valid stream id (a space in it)
    is named as such, rather than read as part of a spec of an unknown kind."""
    from pathlib import Path

    from streamtag.wire.protocol import STREAM_ID_PATTERN

    given, sep, _ = text.partition("=")
    if (sep and not re.fullmatch(STREAM_ID_PATTERN, given) and "/" not in given
            and not Path(text).exists()):
        raise argparse.ArgumentTypeError(
            f"the stream id {given!r} in {text!r} is not valid: an id is 1 to 128 of the "
            "characters A-Z a-z 0-9 _ . : - (no spaces), as in my_radio=http://...")
    return text


def version_text() -> str:
    """What ``--version`` prints: the package's version, its one place (pyproject.toml reads
    it from there)."""
    from streamtag import __version__

    return f"streamtag {__version__}"


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every command takes: ``-q`` / ``-v`` and ``--version``."""
    talk = parser.add_mutually_exclusive_group()
    talk.add_argument("-q", "--quiet", action="store_true",
                      help="only data and errors: no notes or progress on stderr")
    talk.add_argument("-v", "--verbose", action="count", default=0,
                      help="more logging on stderr (-vv: debug)")
    parser.add_argument("--version", action="version", version=version_text())


def commands(parser: argparse.ArgumentParser, prefix: str = ""
             ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command of ``parser`` that runs (``models list``, not ``models``), by its full
    name, with its parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from commands(child, f"{prefix} {name}".strip())
            return
    if prefix:
        yield prefix, parser


DAILY = "run, listen, tag, dashboard, record, history, status, control, models"


def build_parser() -> argparse.ArgumentParser:
    from streamtag.frontend import LogMelOptions

    parser = argparse.ArgumentParser(
        prog="streamtag", description="Streaming audio tagger.",
        epilog=f"Daily commands first ({DAILY}); then the demo and tools; training and "
               "development last. Every command takes -q, -v and --help; errors go to stderr "
               "with exit status 2 for a command line or config that cannot work and 1 for "
               "work that failed (docs/operations.md, Command line).")
    parser.add_argument("--version", action="version", version=version_text())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="the daemon: tag audio streams and publish over ZeroMQ")
    p.add_argument("--config", help="daemon TOML file (flags override it)")
    _add_model(p)
    p.add_argument("--source", action="append", metavar="[ID=]SPEC", type=source_flag,
                   help="file:PATH, a path, http(s)://URL, device:NAME or pipe:; repeatable")
    p.add_argument("--publish", type=zmq_endpoint,
                   help=f"PUB endpoint (default {DEFAULT_FEED_ENDPOINT})")
    p.add_argument("--control", type=zmq_endpoint_or_off,
                   help=f"control endpoint (default {DEFAULT_CONTROL_ENDPOINT}; '' off)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--hop-seconds", type=float, help="seconds between windows")
    _add_backend(p, None)
    _add_precision(p, None)
    p.add_argument("--metrics-port", type=port_number,
                   help="serve Prometheus metrics on this port")
    p.add_argument("--realtime", action="store_true", help="play file sources at real speed")
    p.add_argument("--shard", metavar="K/N",
                   help="serve only shard K of N of the sources (by a stable hash of the "
                        "stream id); auto/N: K from the host name NAME-K (a StatefulSet pod)")
    p.add_argument("--processes", metavar="N|auto",
                   help="worker processes, each serving its part of the sources (of shard K "
                        "with --shard) behind the same publish and control endpoints, restarted "
                        "when one dies; auto: from the CPUs this process may use ([engine] "
                        "processes; default 1)")
    p.add_argument("--exit-when-done", action="store_true",
                   help="stop once every source has ended or failed for good (a live source "
                        "that sets neither max_reconnects nor reconnect gives up after 5 "
                        "reconnects without audio); exit status 1 when one failed (its error "
                        "is said)")
    p.add_argument("--allow-file-root", action="append", metavar="DIR",
                   help="let control add_source open files below DIR ([control] file_roots); "
                        "repeatable")
    p.add_argument("--loudness", action="store_true",
                   help="measure EBU R128 momentary and short-term loudness (LUFS) of every "
                        "stream at its own rate and channels ([health] loudness = true)")
    p.add_argument("--insecure", action="store_true",
                   help="let the publish or control endpoint bind beyond loopback without "
                        "CURVE keys ([security] insecure = true); a warning names what is open")
    p.add_argument("--venue", action="store_true",
                   help="a screen for the room's mood: the default sound card (unless "
                        "--source), the installed real-music model (unless --model) and the "
                        "venue page at /venue (docs/venue.md)")
    p.add_argument("--dashboard-port", type=port_number, default=8080,
                   help="with --venue: the page's HTTP port (default 8080)")
    p.add_argument("--dashboard-host", default="127.0.0.1",
                   help="with --venue: the address the page listens on (default loopback; "
                        "0.0.0.0 for a screen on another machine)")
    p.add_argument("--allow-host", action="append", metavar="NAME",
                   help="with --venue: a name the page may be reached by (its Host), besides "
                        "localhost and IP addresses; repeatable (as for streamtag dashboard)")
    p.set_defaults(func=_command("run"))

    p = sub.add_parser("listen", help="print a daemon's messages live")
    p.add_argument("endpoint", nargs="?", default=DEFAULT_FEED_ENDPOINT, type=zmq_endpoint)
    p.add_argument("--stream", action="append", help="only this stream; repeatable")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--count", type=count_at_least_1, help="stop after this many messages")
    p.add_argument("--duration", type=seconds_above_0, help="stop after this many seconds")
    p.add_argument("--server-key", help="the daemon's public key file (NAME.key), for CURVE")
    p.add_argument("--client-key", help="this client's secret key file (NAME.key_secret)")
    p.add_argument("--tracks", action="store_true",
                   help="only what is playing: each title change and each finished track's "
                        "summary")
    p.add_argument("--control", metavar="ENDPOINT", type=zmq_endpoint,
                   help="with --tracks: the daemon's control endpoint, to start with its "
                        "current titles and last tracks")
    p.add_argument("--wait", type=seconds_from_0, default=30.0, metavar="SECONDS",
                   help="with --control: how long to wait for a daemon that is not up yet "
                        "(default 30; 0: ask once)")
    p.add_argument("--token-file", metavar="FILE",
                   help="with --control: the daemon's control token file, where it is not "
                        "the default (control.token in streamtag's folder)")
    p.set_defaults(func=_command("listen"))

    p = sub.add_parser("tag", help="tag audio files offline: segments and a summary per file")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="audio files (any format PyAV decodes); - reads standard input to its "
                        "end. A stream (http://...) is tagged live by streamtag run --source "
                        "URL")
    _add_model(p)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--hop-seconds", type=float, help="seconds between windows")
    _add_backend(p, "auto")
    _add_precision(p, "fp32")
    p.add_argument("--loudness", action="store_true",
                   help="also each file's EBU R128 integrated loudness (LUFS), measured at its "
                        "own rate and channels")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object per file")
    fmt.add_argument("--csv", action="store_true", help="CSV rows: segments and track tags")
    p.set_defaults(func=_command("tag"))

    p = sub.add_parser("dashboard",
                       help="a web page showing the tags live, for a screen in the room")
    p.add_argument("--connect", action="append", metavar="ENDPOINT", type=zmq_endpoint,
                   help="the daemon's (or a proxy's) PUB endpoint; repeatable "
                        f"(default {DEFAULT_FEED_ENDPOINT})")
    p.add_argument("--control", metavar="ENDPOINT", type=zmq_endpoint,
                   help="the daemon's control endpoint: the current state is fetched at start")
    p.add_argument("--token-file", metavar="FILE",
                   help="with --control: the daemon's control token file, where it is not "
                        "the default (control.token in streamtag's folder)")
    p.add_argument("--port", type=port_number, default=8080,
                   help="HTTP port (default 8080; 0: any free)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    p.add_argument("--db", metavar="URL",
                   help="a history database (streamtag record's) for the history view")
    _add_client_keys(p, "the daemon's (or proxy's)")
    p.add_argument("--allow-host", action="append", metavar="NAME",
                   help="a name the page may be reached by (its Host), besides localhost, "
                        "loopback addresses and --host; repeatable. Others get 403: a web page "
                        "elsewhere cannot read the feed by renaming itself (DNS rebinding)")
    p.add_argument("--max-clients", type=int,
                   help="pages connected at once (default 32); the next is refused with 503")
    p.add_argument("--max-clients-per-address", type=int, metavar="N",
                   help="pages connected at once from one address (default 8); behind a "
                        "reverse proxy every page comes from its address: raise it there")
    p.add_argument("--venue", action="store_true",
                   help="open the venue page (/venue): one stream's mood, full screen")
    p.add_argument("--stream", help="with --venue: the stream the venue page shows")
    p.set_defaults(func=_command("dashboard"))

    p = sub.add_parser("record", help="write what daemons publish to a history database")
    p.add_argument("--connect", action="append", metavar="ENDPOINT", type=zmq_endpoint,
                   help="a daemon's (or a proxy's) PUB endpoint; repeatable")
    p.add_argument("--db", default="sqlite:///tags.db",
                   help="sqlite:///PATH (default sqlite:///tags.db) or postgresql://...")
    p.add_argument("--control", action="append", metavar="ENDPOINT", type=zmq_endpoint,
                   help="a daemon's control endpoint, for a snapshot at start; repeatable")
    p.add_argument("--queue-size", type=count_at_least_1, default=100_000,
                   help="messages that may wait for a slow or down database (default 100000)")
    p.add_argument("--batch-size", type=count_at_least_1, default=2000,
                   help="messages per transaction at most (default 2000)")
    p.add_argument("--max-backoff-s", type=seconds_above_0, default=30.0,
                   help="longest wait between retries of a down database (default 30)")
    p.add_argument("--drain-timeout-s", type=seconds_from_0, default=10.0,
                   help="on stop, how long to wait for the database to take the queue")
    p.add_argument("--block-s", type=block_seconds, default=60.0,
                   help="the longest a window waits in memory, packed with its stream's "
                        "minute, before it is written (default 60, at most 60; a crash "
                        "loses that much of each stream, stored as a gap)")
    p.add_argument("--keep", metavar="KIND=SPAN,...", default="",
                   help="how long to keep what, e.g. windows=30d,rollups=400d (the "
                        "defaults); also tracks, events, statuses, silences, gaps, snapshots "
                        "(kept for ever unless given); a span is a number and s, m, h or d, "
                        "or 'forever'")
    p.add_argument("--metrics-port", type=port_number,
                   help="serve Prometheus metrics on this port")
    p.add_argument("--metrics-address", default="127.0.0.1",
                   help="address of the metrics server (default loopback)")
    p.add_argument("--upgrade", action="store_true",
                   help="create or upgrade the database schema, then exit")
    _add_client_keys(p, "the daemon's (or proxy's)")
    p.set_defaults(func=_command("record"))

    p = sub.add_parser("history", help="what was recorded: as-run log, plays, tag airtime, "
                                       "off air, events")
    p.add_argument("--db", default="sqlite:///tags.db",
                   help="sqlite:///PATH (default sqlite:///tags.db) or postgresql://...")
    p.add_argument("--stream", action="append", help="only this stream; repeatable")
    p.add_argument("--since", help="from this time: ISO 8601 (in --tz unless it has an "
                                   "offset), a time of day (the last one there was: 23:50 at "
                                   "00:05 is yesterday's), today or yesterday [HH:MM], Unix "
                                   "seconds, or ago as 90s, 30m, 2h, 1d, 1w")
    p.add_argument("--until", help="up to this time (same forms; a time of day is the first "
                                   "one after --since)")
    p.add_argument("--tz", metavar="ZONE",
                   help="the time zone times are read and shown in, an IANA name such as "
                        "Europe/Berlin or UTC (default: this machine's; the report names it)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object")
    fmt.add_argument("--csv", action="store_true",
                     help="CSV: one row per track with a column per tag, airtime, off air, "
                          "silence, plays, events, gaps")
    p.add_argument("--events", action=argparse.BooleanOptionalAction, default=None,
                   help="list every tag on/off event (default: counted in the text, listed in "
                        "--json and --csv)")
    p.add_argument("--tags", type=int, default=5, metavar="N",
                   help="tags listed per stream and per track (default 5; the CSV has all)")
    p.add_argument("--period", choices=("day", "week"),
                   help="play counts per day or week (default: for the whole range)")
    p.add_argument("--plot", metavar="FILE.png", help="draw a timeline of tag shares per stream")
    p.add_argument("--top", type=int, default=8, help="tags drawn per stream (default 8)")
    p.set_defaults(func=_command("history"))

    p = sub.add_parser("status", help="what a running daemon is doing: each stream's state, "
                                      "title, station, level and counters")
    p.add_argument("--control", metavar="ENDPOINT", type=zmq_endpoint,
                   default=DEFAULT_CONTROL_ENDPOINT,
                   help=f"the daemon's control endpoint (default {DEFAULT_CONTROL_ENDPOINT})")
    p.add_argument("--stream", action="append", help="only this stream; repeatable")
    p.add_argument("--json", action="store_true", help="the daemon's reply as one JSON object")
    p.add_argument("--wait", type=seconds_from_0, default=0.0, metavar="SECONDS",
                   help="wait this long for a daemon that is not up yet (default 0: ask once, "
                        "for 2 s)")
    p.add_argument("--token-file", metavar="FILE",
                   help="the daemon's control token file, where it is not the default "
                        "(control.token in streamtag's folder)")
    _add_client_keys(p, "the daemon's")
    p.set_defaults(func=_command("status"))

    p = sub.add_parser("control", help="ask a running daemon to add or remove a stream, or "
                                       "load another model")
    actions = p.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="start a stream: ID and SPEC as --source takes them")
    add.add_argument("id", type=stream_id, help="the stream id (1 to 128 of A-Z a-z 0-9 _ . : -)")
    add.add_argument("spec", help="file:PATH, a path, http(s)://URL or device:NAME, within the "
                                  "daemon's [control] allow-lists")
    add.add_argument("--title", help="the stream's fixed title (else its metadata's)")
    add.add_argument("--option", action="append", metavar="KEY=VALUE",
                     help="a source option, e.g. reconnect=false, max_backoff_s=60, "
                          "realtime=true (TOML values); repeatable")
    remove = actions.add_parser("remove", help="end a stream: its last windows are published")
    remove.add_argument("id", type=stream_id)
    reload = actions.add_parser("reload", help="serve another model: an installed model's name "
                                               "or a file under [control] model_roots")
    reload.add_argument("model")
    ping = actions.add_parser("ping", help="whether the daemon answers, and what it knows")
    for action in (add, remove, reload, ping):
        action.add_argument("--control", metavar="ENDPOINT", type=zmq_endpoint,
                            default=DEFAULT_CONTROL_ENDPOINT,
                            help=f"the daemon's control endpoint (default "
                                 f"{DEFAULT_CONTROL_ENDPOINT})")
        action.add_argument("--wait", type=seconds_from_0, default=0.0, metavar="SECONDS",
                            help="wait this long for a daemon that is not up yet (default 0: "
                                 "ask once, for 2 s)")
        action.add_argument("--token-file", metavar="FILE",
                            help="the daemon's control token file, where it is not the default")
        _add_client_keys(action, "the daemon's")
        action.add_argument("--json", action="store_true",
                            help="the daemon's reply as one JSON object")
        action.set_defaults(func=_command("control"))

    from streamtag.commands.models import add_models_commands  # only argparse until a command runs

    add_models_commands(sub)

    p = sub.add_parser("demo", help="watch the daemon tag a generated piece live")
    _add_model(p)
    p.add_argument("--realtime", action="store_true", help="play at real speed")
    p.add_argument("--speed", type=float, default=4.0, help="playback speed (default 4)")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the piece")
    p.add_argument("--dashboard", action="store_true",
                   help="also serve the web dashboard and open it in a browser where there is "
                        "one; it stays up after the piece until Ctrl-C")
    p.add_argument("--dashboard-port", type=port_number, default=8080)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    _add_backend(p, "auto")
    p.set_defaults(func=_command("demo"))

    p = sub.add_parser("devices", help="list audio input devices")
    p.add_argument("--json", action="store_true", help="one JSON list of the devices")
    p.set_defaults(func=_command("devices"))

    p = sub.add_parser("proxy", help="XSUB/XPUB proxy: many daemons, one subscriber endpoint")
    p.add_argument("--frontend", default=DEFAULT_FRONTEND, type=zmq_endpoint,
                   help="XSUB endpoint daemons publish to (bound; default %(default)s)")
    p.add_argument("--backend", default=DEFAULT_BACKEND, type=zmq_endpoint,
                   help="XPUB endpoint subscribers connect to (bound; default %(default)s)")
    p.add_argument("--upstream", action="append", type=zmq_endpoint,
                   help="a daemon PUB endpoint to connect to")
    p.add_argument("--server-key", metavar="FILE",
                   help="the proxy's secret key (NAME.key_secret), for CURVE: subscribers see it "
                        "as the server, daemons as a client (put its NAME.key in their "
                        "client_keys)")
    p.add_argument("--client-keys", metavar="DIR",
                   help="the public keys (*.key) of the subscribers let in on the backend")
    p.add_argument("--daemon-key", metavar="FILE",
                   help="the daemons' public key (NAME.key of their [security] server_key): "
                        "the frontend and --upstream take only daemons holding its secret")
    p.add_argument("--insecure", action="store_true",
                   help="bind beyond loopback without keys: unencrypted and open to anyone "
                        "who can reach it")
    p.add_argument("--max-message-bytes", type=int, default=MAX_MESSAGE_BYTES, metavar="N",
                   help="a daemon sending a larger frame is disconnected (default 4 MiB)")
    p.set_defaults(func=_command("proxy"))

    p = sub.add_parser("keys", help="CURVE key pairs for encrypted, authenticated sockets")
    keys_sub = p.add_subparsers(dest="keys_command", required=True)
    g = keys_sub.add_parser("generate", help="write NAME.key and NAME.key_secret in DIRECTORY")
    g.add_argument("directory")
    g.add_argument("--name", default="server",
                   help="the key pair's name (default: server, the daemon's); a subscriber's "
                        "public key goes in [security] client_keys, an administrator's (e.g. "
                        "--name admin) in admin_keys")
    g.add_argument("--json", action="store_true",
                   help="the two files written, as one JSON object")
    g.set_defaults(func=_command("keys"))

    p = sub.add_parser("features", help="log-mel frames of audio files, saved as .npy")
    p.add_argument("file", nargs="+", metavar="FILE",
                   help="audio files PyAV decodes, each saved beside it as NAME.npy; - reads "
                        "standard input (with --out)")
    p.add_argument("--preset", default="musicnn", choices=LogMelOptions.preset_names())
    p.add_argument("--options", help='JSON object of option changes, e.g. \'{"n_mels": 128}\'')
    p.add_argument("--out", help="output .npy of one input (default: the input's name with "
                                 ".npy)")
    p.add_argument("--mels-first", action="store_true",
                   help="save (n_mels, frames) instead of (frames, n_mels)")
    p.add_argument("--json", action="store_true",
                   help="what was written, one JSON object a file on stdout")
    p.set_defaults(func=_command("features"))

    from streamtag.commands.train import (
        add_train_commands,  # only argparse: the trainer loads lazily
    )

    add_train_commands(sub)

    for _, command in commands(parser):
        add_common_flags(command)
        command.set_defaults(command_parser=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    from streamtag.commands import log_level

    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said with the command's own usage line, not the top level's
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    # (a no-op where the host process set up logging already, as pytest does)
    logging.basicConfig(level=log_level(args),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except BrokenPipeError:
        # The reader went away (`streamtag demo | head`): stop quietly, as command-line tools
        # do. Python flushes stdout once more at exit; point it at /dev/null so that cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except ModuleNotFoundError as error:
        extra = OPTIONAL.get((error.name or "").split(".")[0])
        if extra is None:
            raise
        from streamtag.commands import EXIT_USAGE
        from streamtag.model.stored import TORCH_EXTRA

        what, requirement = extra
        how = TORCH_EXTRA if requirement == "torch" else f"pip install {requirement}"
        print(f"streamtag {args.command}: this needs {what}, which is not installed here: "
              f"{how}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
