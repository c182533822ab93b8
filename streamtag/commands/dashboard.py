"""``streamtag dashboard``: the venue page served until a signal."""

from __future__ import annotations

import argparse
import errno
import sys
from urllib.parse import quote

from streamtag.commands import EXIT_USAGE, stop_on_signals
from streamtag.commands.flags import add_daemon_client_flags, port_number, zmq_endpoint
from streamtag.commands.status import client_credentials
from streamtag.wire.sockets import DEFAULT_FEED_ENDPOINT

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard",
                       help="a web page showing the tags live, for a screen in the room")
    p.add_argument("--connect", action="append", metavar="ENDPOINT", type=zmq_endpoint,
                   help="the daemon's (or a proxy's) PUB endpoint; repeatable "
                        f"(default {DEFAULT_FEED_ENDPOINT})")
    add_daemon_client_flags(
        p, control="the daemon's control endpoint: the current state is fetched at start",
        wait=None, whose="the daemon's (or proxy's)")
    p.add_argument("--port", type=port_number, default=8080,
                   help="HTTP port (default 8080; 0: any free)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    p.add_argument("--db", metavar="URL",
                   help="a history database (streamtag record's) for the history view")
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
    p.set_defaults(func=cmd_dashboard)


def cmd_dashboard(args: argparse.Namespace) -> int:
    """args has connect (str or list), control, port, host and db; server_key, client_key,
    allow_host, max_clients and max_clients_per_address; venue (the printed address is the
    venue page's) and stream (the stream that page shows)."""
    from streamtag.wire.control import default_token_file

    try:
        from streamtag.web.server import run_dashboard
    except ImportError as exc:  # websockets, which only the dashboard needs
        print(f"streamtag dashboard: needs the websockets package ({exc}); install it with "
              "'pip install websockets'", file=sys.stderr)
        return EXIT_USAGE
    credentials = client_credentials(
        args, lambda line: print(f"streamtag dashboard: {line}", file=sys.stderr))
    if credentials is None:
        return EXIT_USAGE
    # the token file checked here; the page reads it on each request (a new daemon, a new one)
    curve, _ = credentials
    token_file = getattr(args, "token_file", None)
    options = {"db": getattr(args, "db", None), "curve": curve,
               "allow_hosts": getattr(args, "allow_host", None) or (),
               "token_file": token_file}
    if getattr(args, "max_clients", None) is not None:  # else the server's default
        options["max_clients"] = args.max_clients
    if getattr(args, "max_clients_per_address", None) is not None:
        options["max_clients_per_address"] = args.max_clients_per_address
    connect = args.connect if args.connect else DEFAULT_FEED_ENDPOINT
    feed = connect if isinstance(connect, str) else ", ".join(connect)
    if args.host not in LOOPBACK:
        print(f"streamtag dashboard: listening on {args.host}: anyone who can reach it sees "
              "the tags; there is no authentication", file=sys.stderr)

    page = ""
    if getattr(args, "venue", False):
        stream = getattr(args, "stream", None)
        if isinstance(stream, list):  # a flag given as append: the first one
            stream = stream[0] if stream else None
        page = "venue" + (f"?stream={quote(stream, safe='')}" if stream else "")

    def ready(url: str) -> None:
        if getattr(args, "quiet", False):
            return
        # the page's snapshot requests go unasked, signed with the token: say where
        print(f"streamtag dashboard: open {url}{page} (feed {feed}"
              + (f", control {args.control}, signed with "
                 + ("the admin key" if curve else
                    f"the token in {token_file or default_token_file()}")
                 if args.control else "") + ")",
              file=sys.stderr, flush=True)

    with stop_on_signals() as stop:
        try:
            run_dashboard(connect, args.port, args.host, args.control, ready, stop, **options)
        except (OSError, ValueError) as exc:
            hint = ("; another server uses that port: choose one with --port"
                    if getattr(exc, "errno", None) == errno.EADDRINUSE else "")
            print(f"streamtag dashboard: {exc}{hint}", file=sys.stderr)
            return EXIT_USAGE
    return 0
