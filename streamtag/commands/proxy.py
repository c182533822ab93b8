"""``streamtag proxy``: the XSUB/XPUB proxy in the foreground until a signal."""

from __future__ import annotations

import argparse
import sys
import threading

from streamtag.commands import EXIT_USAGE, stop_on_signals
from streamtag.commands.flags import zmq_endpoint
from streamtag.errors import ConfigError
from streamtag.wire.sockets import (
    DEFAULT_BACKEND,
    DEFAULT_FRONTEND,
    FEED_MAX_CONNECTIONS,
    FEED_MAX_CONNECTIONS_PER_ADDRESS,
    MAX_MESSAGE_BYTES,
)


def add_commands(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--max-connections", type=int, default=FEED_MAX_CONNECTIONS, metavar="N",
                   help="connections at once to each bound port; past it an unauthenticated "
                        "one of the most crowded address is ended (default %(default)s; fewer "
                        "where the open-files limit leaves less)")
    p.add_argument("--max-connections-per-address", type=int,
                   default=FEED_MAX_CONNECTIONS_PER_ADDRESS, metavar="N",
                   help="connections at once to each bound port from one address (default "
                        "%(default)s)")
    p.set_defaults(func=cmd_proxy)


def cmd_proxy(args: argparse.Namespace) -> int:
    """args has frontend, backend, upstream, server_key, client_keys, daemon_key, insecure and
    max_message_bytes."""
    from streamtag.wire.descriptors import (
        ConnectionCaps,
        fit_caps,
        raise_files_limit,
        room_for_peers,
        say_fitted,
    )
    from streamtag.wire.proxy import open_endpoints, run_proxy
    from streamtag.wire.security import is_loopback_endpoint, load_keys

    try:
        curve = load_keys(args.server_key, need_secret=True) if args.server_key else None
        daemon_key = load_keys(args.daemon_key, need_secret=False).public \
            if args.daemon_key else None
        if args.max_message_bytes < 1:
            raise ConfigError("--max-message-bytes must be at least 1")
        if args.max_connections < 1 or args.max_connections_per_address < 1:
            raise ConfigError("--max-connections and --max-connections-per-address must be at "
                              "least 1")
    except ConfigError as exc:
        print(f"streamtag proxy: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.insecure:
        for endpoint, can, _ in open_endpoints(args.frontend, args.backend,
                                               daemon_key=daemon_key is not None,
                                               client_keys=args.client_keys is not None):
            print(f"streamtag proxy: WARNING: --insecure: {endpoint} is open without CURVE "
                  f"keys: anyone who can reach it can {can}", file=sys.stderr)
    if daemon_key is None:
        for endpoint in args.upstream or ():
            if not is_loopback_endpoint(endpoint):
                print(f"streamtag proxy: WARNING: {endpoint} is reached without CURVE keys: its "
                      "messages cross the network unencrypted and unauthenticated (give "
                      "--daemon-key)", file=sys.stderr)

    # every peer costs a descriptor: the limit raised, both ports' caps within it
    limit = raise_files_limit("proxy")
    wanted = ConnectionCaps(args.max_connections, args.max_connections_per_address)
    room = room_for_peers(limit, sources=len(args.upstream or ()))
    frontend_caps, backend_caps = fit_caps([wanted, wanted], room)
    say_fitted("streamtag proxy", limit, room, [("--frontend", wanted, frontend_caps),
                                               ("--backend", wanted, backend_caps)])

    def ready(frontend: str | None, backend: str) -> None:
        if args.quiet:
            return
        upstream = ", ".join(args.upstream or ())
        print(f"streamtag proxy: daemons publish to {frontend}"
              + (f" and it connects to {upstream}" if upstream else "")
              + f", subscribers connect to {backend}" + (" (CURVE)" if curve is not None else ""),
              file=sys.stderr, flush=True)

    # The proxy loop runs in libzmq without returning to Python, so it cannot see a signal:
    # it runs in a thread, and SIGTERM (an orchestrator stopping the pod) or Ctrl-C here
    # stops it through its stop event. Exit 0 either way.
    failure: list[BaseException] = []
    with stop_on_signals() as stop:
        def serve() -> None:
            try:
                run_proxy(args.frontend, args.backend, stop, upstream=args.upstream or (),
                          ready=ready, curve=curve, client_keys=args.client_keys,
                          daemon_key=daemon_key, insecure=args.insecure,
                          max_message_bytes=args.max_message_bytes, caps=backend_caps,
                          frontend_caps=frontend_caps)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                failure.append(exc)
                stop.set()

        worker = threading.Thread(target=serve, name="streamtag-proxy", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
    if failure and isinstance(failure[0], ConfigError):  # keys, or an endpoint left open
        print(f"streamtag proxy: {failure[0]}", file=sys.stderr)
        return EXIT_USAGE
    if failure and isinstance(failure[0], OSError):  # an endpoint it cannot bind
        print(f"streamtag proxy: {failure[0].strerror or failure[0]}", file=sys.stderr)
        return EXIT_USAGE
    if failure:
        raise failure[0]
    return 0
