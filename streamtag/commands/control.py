"""``streamtag control``: the control socket's requests from the command line, as ``status``
asks for the state: ``add`` a stream, ``remove`` one, ``reload`` the model, ``ping``.

Each request carries the control token (read from the token file when the daemon is on this
machine, or ``--token-file``) or, under CURVE, this client's admin key. The daemon checks the
request (its allow-lists, ``max_sources``, the stream's shard) and its refusal is printed as it
came, with exit status 1; so is a daemon that does not answer. Under ``run --processes`` the
supervisor hands an add or a remove to the worker that owns the stream.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from streamtag import values
from streamtag.commands import EXIT_USAGE, terminal_json, terminal_text
from streamtag.commands.flags import add_daemon_client_flags, stream_id
from streamtag.commands.status import EXIT_UNREACHABLE, answered, client_credentials
from streamtag.errors import ConfigError
from streamtag.wire.requests import AddSource, ClientRequest, Ping, ReloadModel, RemoveSource

# What `--option` may not set: the request's own fields.
RESERVED = (*AddSource.FIELDS, "token")
# The daemon answers reload_model once the new model has loaded and been checked: musicnn's
# graphs take seconds, a large model on a busy box longer.
RELOAD_MS = 300_000


def source_options(pairs: list[str]) -> dict[str, Any]:
    """``--option KEY=VALUE`` flags as a source's options (values as TOML, else text);
    ConfigError for one that is not KEY=VALUE or that names a field of the request."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--option {pair!r}: write KEY=VALUE, e.g. --option "
                              "reconnect=false or --option max_backoff_s=60")
        if key in RESERVED:
            raise ConfigError(f"--option {pair!r}: {key} is not an option (the id and spec are "
                              "the arguments, the title is --title)")
        options[key] = values.toml_value(value)
    return options


def request_of(args: argparse.Namespace) -> ClientRequest:
    """The control request ``streamtag control ACTION ...`` sends."""
    if args.action == "add":
        return AddSource(args.id, args.spec, args.title, source_options(args.option or []))
    if args.action == "remove":
        return RemoveSource(args.id)
    if args.action == "reload":
        return ReloadModel(args.model)
    return Ping()


def shown(value: Any) -> str:
    """Text from the daemon (or echoed to it), without what a terminal would act on."""
    return terminal_text(str(value), one_line=True)


def said(args: argparse.Namespace, reply: dict[str, Any]) -> str:
    """The line printed for the daemon's acceptance of the request."""
    if args.action == "add":
        return f"added {shown(reply.get('id', args.id))}: the daemon opens {shown(args.spec)}"
    if args.action == "remove":
        removed = reply.get("removed", "stopping")
        if removed != "stopping":  # it had already ended or failed: status forgets it
            return (f"removed {shown(reply.get('id', args.id))}: it had {shown(removed)}; "
                    "status no longer lists it")
        return (f"removed {shown(reply.get('id', args.id))}: its last windows and its ended "
                "status follow on the feed")
    if args.action == "reload":
        model = reply.get("model") or {}
        return (f"reloaded: {shown(model.get('name', '?'))} "
                f"({shown(str(model.get('hash', '?'))[:12])}), {len(model.get('tags') or [])} "
                "tags")
    return (f"the daemon answers: protocol {shown(reply.get('protocol', '?'))}, commands "
            f"{shown(', '.join(map(str, reply.get('commands') or [])))}")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("control", help="ask a running daemon to add or remove a stream, or "
                                       "load another model")
    actions = p.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="start a stream: ID and SPEC as --source takes them")
    add.add_argument("id", type=stream_id, help="the stream id (1 to 128 of A-Z a-z 0-9 _ . : -)")
    add.add_argument("spec", help="file:PATH or a path, http(s)://URL or device:NAME_OR_INDEX, "
                                  "within the daemon's [control] allow-lists")
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
        add_daemon_client_flags(action)
        action.add_argument("--json", action="store_true",
                            help="the daemon's reply as one JSON object")
        action.set_defaults(func=cmd_control)


def cmd_control(args: argparse.Namespace) -> int:
    from streamtag.wire.protocol import canonical_json

    def say(line: str) -> None:
        print(f"streamtag control: {line}", file=sys.stderr, flush=True)

    credentials = client_credentials(args, say)
    if credentials is None:
        return EXIT_USAGE
    curve, token = credentials
    try:
        request = request_of(args)
    except ConfigError as exc:
        say(str(exc))
        return EXIT_USAGE
    if args.action == "reload":  # a daemon that is there (--wait), then its long answer
        if answered(args.control, Ping(), args.wait, say, curve=curve,
                    token=token) is None:
            return EXIT_UNREACHABLE
        reply = answered(args.control, request, 0.0, say, curve=curve, token=token,
                         attempt_ms=RELOAD_MS)
    else:
        reply = answered(args.control, request, args.wait, say, curve=curve, token=token)
    if reply is None:
        return EXIT_UNREACHABLE
    if args.json:
        body = {k: v for k, v in reply.items() if k != "ok"}
        print(terminal_json(canonical_json(body).decode("utf-8")), flush=True)
        return 0
    print(said(args, reply), flush=True)
    return 0
