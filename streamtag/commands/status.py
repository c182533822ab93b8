"""``streamtag status``: what a running daemon is doing, asked of its control socket.

One line for the daemon (session, uptime, model, engine counts) and a few per stream: its
state, the title playing and the station's name, the source, the audio level where the daemon
reports one, and the counters. ``--json`` prints the daemon's reply as it came. The request
carries the control token (read from the token file when the daemon is on this machine) or,
under CURVE, this client's admin key, as ``streamtag listen --control`` does.

`ask_daemon` is the request with waiting for a daemon that is not up yet
(``streamtag.wire.control.ControlClient``), which ``listen --control`` shares.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

from streamtag.commands import EXIT_USAGE, names_listed, terminal_json, terminal_text
from streamtag.commands.flags import add_daemon_client_flags
from streamtag.errors import ConfigError, ProtocolError

if TYPE_CHECKING:
    import zmq

    from streamtag.wire.requests import ClientRequest
    from streamtag.wire.security import ClientCurve

ATTEMPT_MS = 2000  # one request's wait for its reply; ask_daemon asks again until its deadline
EXIT_UNREACHABLE = 1  # no answer, or a refusal: the command could not say the daemon's state


def ask_daemon(endpoint: str, request: ClientRequest | Mapping[str, Any], wait_s: float, *,
               curve: ClientCurve | None = None, token: str | None = None,
               on_wait: Callable[[str], None] | None = None,
               context: zmq.Context | None = None,
               attempt_ms: int = ATTEMPT_MS) -> dict[str, Any]:
    """The daemon's reply to ``request``, asked again (every ``ATTEMPT_MS``) until ``wait_s``
    seconds have passed: a daemon that is still loading its model answers nothing yet.
    ``on_wait`` is told once that the command is waiting. ``attempt_ms``: how long one attempt
    waits for the reply (a request that takes long, such as loading a model, needs more).
    Raises the last attempt's TimeoutError; ProtocolError for a reply that is not valid."""
    from streamtag.wire.control import ControlClient

    return ControlClient(endpoint, curve=curve, token=token, context=context,
                         attempt_ms=attempt_ms, wait_s=wait_s, on_wait=on_wait).ask(request)


def _shown(value: Any) -> str:
    return terminal_text(str(value), one_line=True)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _level(state: Mapping[str, Any]) -> str | None:
    """The stream's last audio level, where the daemon's reply carries one."""
    for key in ("level", "audio"):
        level = state.get(key)
        if isinstance(level, Mapping) and isinstance(level.get("rms_dbfs"), (int, float)):
            text = f"level {level['rms_dbfs']:.1f} dBFS"
            if isinstance(level.get("peak_dbfs"), (int, float)):
                text += f" (peak {level['peak_dbfs']:.1f})"
            if isinstance(level.get("short_term_lufs"), (int, float)):  # [health] loudness
                text += f", {level['short_term_lufs']:.1f} LUFS short-term"
            return text
    return None


def _plural(count: Any, word: str, words: str | None = None) -> str:
    return f"{_shown(count)} {word if count == 1 else words or word + 's'}"


def _worker_lines(reply: Mapping[str, Any]) -> list[str]:
    """A supervised run's (``run --processes N``) worker processes: each one's state, process
    id, streams and restarts with how the last process ended; none for a single process."""
    workers = reply.get("workers")
    if not isinstance(workers, list) or not workers:
        return []
    lines = [f"workers  {_plural(reply.get('processes', len(workers)), 'process', 'processes')}"
             f", {_plural(reply.get('restarts', 0), 'restart')}"]
    for worker in workers:
        if not isinstance(worker, Mapping):
            continue
        line = (f"{'':9}worker {_shown(worker.get('index', '?'))}  "
                f"{_shown(worker.get('state', '?')):<13} pid {_shown(worker.get('pid') or '-')}")
        if "streams" in worker:
            line += f"  {_plural(worker['streams'], 'stream')}"
        else:  # it did not answer: its streams are missing from the list below
            line += "  its streams not listed until it serves"
        if worker.get("restarts"):
            line += f"  {_plural(worker['restarts'], 'restart')}"
        if worker.get("last_exit"):
            line += f" (the last process {_shown(worker['last_exit'])})"
        lines.append(line)
    return lines


def format_status(reply: Mapping[str, Any], streams: set[str] | None = None) -> list[str]:
    """The lines ``streamtag status`` prints for a daemon's status reply. Text from the
    daemon (titles, names, errors) is shown without what a terminal would act on."""
    from streamtag.wire.protocol import DOWN_STATES

    model = reply.get("model") or {}
    engine = reply.get("engine") or {}
    session = _shown(str(reply.get("session", "?"))[:8])
    shard = reply.get("shard") or {}
    lines = [f"daemon   session {session}  up {_duration(float(reply.get('uptime_s', 0)))}"
             + (f"  shard {shard.get('index')} of {shard.get('count')}"
                if shard.get("count", 1) != 1 else "")]
    if model:
        lines.append(f"model    {_shown(model.get('name', '?'))} "
                     f"({_shown(str(model.get('hash', '?')).rpartition(':')[2][:12])}), "
                     f"{len(model.get('tags') or [])} tags, on {_shown(model.get('device', '?'))}"
                     f" with {_shown(model.get('backend', '?'))} "
                     f"{_shown(model.get('precision', ''))}".rstrip())
    if isinstance(model.get("speech"), str):  # who decides speech ([content]), in words
        lines.append(f"speech   {_shown(model['speech'])}")
    if engine:
        lines.append("engine   " + "  ".join(
            f"{_shown(key)} {engine[key]}" for key in ("windows", "batches", "dropped_windows",
                                                       "failed_batches") if key in engine))
    lines.extend(_worker_lines(reply))
    shown = {sid: state for sid, state in sorted((reply.get("streams") or {}).items())
             if streams is None or sid in streams}
    if not shown:
        lines.append("streams  none")
    for sid, state in shown.items():
        if not isinstance(state, Mapping):
            continue
        head = f"{_shown(sid):<16} {_shown(state.get('state', '?')):<12}"
        title = state.get("title")
        head += f'  "{_shown(title)}"' if isinstance(title, str) else "  (untitled)"
        if isinstance(state.get("station"), str):
            head += f'  station "{_shown(state["station"])}"'
        # the level of audio now: none while the source is down (the last one is stale)
        level = _level(state) if state.get("state") not in DOWN_STATES else None
        if level:
            head += f"  {level}"
        lines.append(head)
        if state.get("error"):
            lines.append(f"{'':16} error: {_shown(state['error'])}")
        if state.get("source"):
            lines.append(f"{'':16} source: {_shown(state['source'])}"
                         + (f"  (worker {_shown(state['worker'])})" if "worker" in state
                            else ""))
        counters = state.get("counters") or {}
        if isinstance(counters, Mapping) and counters:
            lines.append(f"{'':16} " + _shown(" ".join(
                f"{key}={value}" for key, value in sorted(counters.items()))))
    return lines


def answered(endpoint: str, request: ClientRequest | Mapping[str, Any], wait_s: float,
             say: Callable[[str], None], *, curve: ClientCurve | None = None,
             token: str | None = None, attempt_ms: int = ATTEMPT_MS) -> dict[str, Any] | None:
    """The daemon's reply to ``request`` when it accepted it (``ask_daemon``); else None once
    ``say`` has told why: no answer, a reply that is not valid, or the daemon's refusal."""
    try:
        reply = ask_daemon(endpoint, request, wait_s, curve=curve, token=token, on_wait=say,
                           attempt_ms=attempt_ms)
    except (TimeoutError, ProtocolError, OSError) as exc:
        say(str(exc))
        return None
    if not reply.get("ok"):
        say(f"the daemon refused: {_shown(reply.get('error', 'no reason given'))}")
        return None
    return reply


def client_credentials(args: argparse.Namespace, say: Callable[[str], None]
                       ) -> tuple[ClientCurve | None, str | None] | None:
    """The CURVE keys (``--server-key``, ``--client-key``) and the token (``--token-file``) a
    control client's flags give, those it has (listen, dashboard and status share them); None
    once ``say`` has told why they cannot be used."""
    from streamtag.wire.control import load_token
    from streamtag.wire.exposure import optional_client_curve

    try:
        curve = optional_client_curve(getattr(args, "server_key", None),
                                      getattr(args, "client_key", None))
    except ConfigError as exc:
        say(str(exc))
        return None
    token = None
    token_file = getattr(args, "token_file", None)
    if token_file:
        try:  # refused unless the file is this user's alone and not a link
            token = load_token(token_file)
        except ConfigError as exc:
            say(f"cannot read a control token from {token_file} ({exc}); give the daemon's "
                "[control] token_file")
            return None
    return curve, token


def run_status(endpoint: str, *, as_json: bool = False, streams: set[str] | None = None,
               wait_s: float = 0.0, curve: ClientCurve | None = None, token: str | None = None,
               out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Asks the daemon at ``endpoint`` and prints its state; the exit status."""
    from streamtag.wire.protocol import canonical_json
    from streamtag.wire.requests import Status

    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err

    def say(line: str) -> None:
        print(f"streamtag status: {line}", file=err, flush=True)

    reply = answered(endpoint, Status(), wait_s, say, curve=curve, token=token)
    if reply is None:
        return EXIT_UNREACHABLE
    if streams is not None:
        served = reply.get("streams") if isinstance(reply.get("streams"), Mapping) else {}
        unknown = sorted(streams - set(served))
        if unknown:
            say(f"--stream {', '.join(_shown(repr(s)) for s in unknown)}: the daemon serves "
                f"no such stream; its streams: {names_listed(sorted(served))}")
            return EXIT_USAGE
    if as_json:
        body = {k: v for k, v in reply.items() if k != "ok"}
        if streams is not None:
            body["streams"] = {k: v for k, v in (body.get("streams") or {}).items()
                               if k in streams}
        out.write(terminal_json(canonical_json(body).decode("utf-8")) + "\n")
    else:
        out.write("\n".join(format_status(reply, streams)) + "\n")
    out.flush()
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="what a running daemon is doing: each stream's state, "
                                      "title, station, level and counters")
    add_daemon_client_flags(p)
    p.add_argument("--stream", action="append", help="only this stream; repeatable")
    p.add_argument("--json", action="store_true", help="the daemon's reply as one JSON object")
    p.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    credentials = client_credentials(
        args, lambda line: print(f"streamtag status: {line}", file=sys.stderr))
    if credentials is None:
        return EXIT_USAGE
    curve, token = credentials
    return run_status(args.control, as_json=args.json, streams=set(args.stream or ()) or None,
                      wait_s=args.wait, curve=curve, token=token)
