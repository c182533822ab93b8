"""``streamtag bridge mqtt``: a daemon's feed as retained MQTT topics until a signal, then a
summary (streamtag.bridge.mqtt; docs/bridges.md).

A broker that is down is waited for; one that refuses the login or whose certificate is not
trusted stops the command at once with exit status 2 and the fix. paho-mqtt is an extra
(``pip install 'streamtag[mqtt]'``): without it the command says so in one line."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading

from streamtag.commands import EXIT_USAGE, stop_on_signals
from streamtag.commands.flags import (
    add_daemon_client_flags,
    count_at_least_1,
    seconds_above_0,
    zmq_endpoint,
)
from streamtag.wire.sockets import DEFAULT_FEED_ENDPOINT

MQTT_EXTRA = "pip install 'streamtag[mqtt]'"
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bridge", help="pass a daemon's feed on to what other programs speak")
    kinds = p.add_subparsers(dest="bridge", required=True)
    m = kinds.add_parser(
        "mqtt", help="each station's status, tags, mood, content and last track as retained "
                     "MQTT topics (docs/bridges.md)")
    m.add_argument("--connect", action="append", metavar="ENDPOINT", type=zmq_endpoint,
                   help=f"a daemon's (or a proxy's) PUB endpoint; repeatable (default "
                        f"{DEFAULT_FEED_ENDPOINT})")
    m.add_argument("--broker", default=DEFAULT_BROKER, metavar="URL",
                   help=f"mqtt://HOST[:PORT], or mqtts://HOST[:PORT] for TLS (default "
                        f"{DEFAULT_BROKER}; ports 1883 and 8883 unless given)")
    m.add_argument("--topic-prefix", default="streamtag", metavar="PREFIX",
                   help="the tree's first levels: PREFIX/STATION/status ... (default streamtag)")
    m.add_argument("--name", metavar="NAME",
                   help="this bridge's name, in its client id and PREFIX/bridge/NAME/online "
                        "(default: this machine's host name)")
    m.add_argument("--username", help="the broker's user name")
    m.add_argument("--password-file", metavar="FILE",
                   help="a file whose first line is the broker's password (else the "
                        "STREAMTAG_MQTT_PASSWORD environment variable)")
    m.add_argument("--cafile", metavar="FILE",
                   help="with mqtts://: the certificate authority (PEM) to trust the broker's "
                        "certificate by (default: the system's)")
    m.add_argument("--certfile", metavar="FILE",
                   help="with mqtts://: this client's certificate (PEM), for brokers that ask "
                        "for one")
    m.add_argument("--keyfile", metavar="FILE", help="with --certfile: its private key (PEM)")
    m.add_argument("--homeassistant", action="store_true",
                   help="also retained Home Assistant discovery configs: a mood and a tags "
                        "sensor per station")
    m.add_argument("--discovery-prefix", default="homeassistant", metavar="PREFIX",
                   help="with --homeassistant: Home Assistant's discovery prefix (default "
                        "homeassistant)")
    m.add_argument("--feed-silent-s", type=seconds_above_0, default=10.0, metavar="SECONDS",
                   help="nothing from the feed this long, not even a heartbeat, and "
                        "PREFIX/bridge/NAME/feed says silent (default 10)")
    m.add_argument("--max-stations", type=count_at_least_1, default=1024, metavar="N",
                   help="stations held at most; further ones are not bridged (default 1024)")
    m.add_argument("--max-queued", type=count_at_least_1, default=1000, metavar="N",
                   help="messages waiting for the broker at most (default 1000)")
    m.add_argument("--max-inflight", type=count_at_least_1, default=20, metavar="N",
                   help="messages sent and not yet acknowledged at most (default 20)")
    m.add_argument("--replay", action="append", metavar="ENDPOINT", type=zmq_endpoint,
                   help="a daemon's replay socket ([publish] replay_endpoint): each station's "
                        "latest status, tags and mood at the start, with the feed's keys and "
                        "no control token; repeatable")
    add_daemon_client_flags(
        m, control="a daemon's control endpoint: each station's state, title and active tags "
                   "at the start, from its snapshot (else they come as they change)",
        wait=30.0, whose="the daemon's (or proxy's)")
    m.set_defaults(func=cmd_bridge_mqtt)


def default_name() -> str:
    """The host name's first label: bridges on different machines differ by default."""
    return socket.gethostname().split(".")[0] or "streamtag"


def cmd_bridge_mqtt(args: argparse.Namespace) -> int:
    """args has connect, broker, topic_prefix, name, username, password_file, cafile,
    certfile, keyfile, homeassistant, discovery_prefix, feed_silent_s, max_stations, max_queued,
    max_inflight, replay, control, wait, token_file, server_key, client_key, quiet and verbose."""
    with stop_on_signals() as stop:
        return bridge_mqtt(args, stop)


def bridge_mqtt(args: argparse.Namespace, stop: threading.Event) -> int:
    """Bridges until `stop` is set; the exit status."""
    try:
        import paho.mqtt.client  # noqa: F401  # here, to say how to install it when missing

        from streamtag.bridge.mqtt import (
            BridgeConfig,
            BrokerError,
            BrokerUrl,
            MqttBridge,
            bridge_feed,
            read_password,
        )
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("paho"):
            raise
        print(f"streamtag bridge: this needs paho-mqtt, which is not installed here: "
              f"{MQTT_EXTRA}", file=sys.stderr)
        return EXIT_USAGE
    from streamtag.commands.status import answered, client_credentials
    from streamtag.errors import ConfigError

    def say(line: str) -> None:
        print(f"streamtag bridge: {line}", file=sys.stderr, flush=True)

    credentials = client_credentials(args, say)
    if credentials is None:
        return EXIT_USAGE
    curve, token = credentials

    endpoints = args.connect or [DEFAULT_FEED_ENDPOINT]
    try:
        config = BridgeConfig(
            broker=BrokerUrl.parse(args.broker), name=args.name or default_name(),
            prefix=args.topic_prefix, username=args.username,
            password=read_password(args.password_file, dict(os.environ)),
            cafile=args.cafile, certfile=args.certfile, keyfile=args.keyfile,
            homeassistant=args.homeassistant, discovery_prefix=args.discovery_prefix,
            max_stations=args.max_stations, max_queued=args.max_queued,
            max_inflight=args.max_inflight, feed_silent_s=args.feed_silent_s)
        bridge = MqttBridge(config)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"streamtag bridge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    def started() -> None:
        if not args.quiet:
            print(f"streamtag bridge: bridging {', '.join(endpoints)} to {args.broker} under "
                  f"{config.prefix}/; {config.online_topic} says whether it runs, "
                  f"{config.feed_topic} whether the feed is heard"
                  + (f"; Home Assistant discovery under {config.discovery_prefix}/"
                     if config.homeassistant else ""), file=sys.stderr, flush=True)

    try:
        read = bridge_feed(
            endpoints, bridge, stop, curve=curve, on_connected=started,
            replay=args.replay or (),
            snapshot=None if not args.control else lambda: answered(
                args.control, {"cmd": "snapshot"}, args.wait,
                lambda line: say(f"no snapshot from {args.control}: {line}"), curve=curve,
                token=token))
    except BrokerError as exc:
        print(f"streamtag bridge: {args.broker}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, OSError) as exc:
        print(f"streamtag bridge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    tree = bridge.tree
    print(f"streamtag bridge: read {read} messages of {len(tree.stations)} stations; "
          f"published {bridge.published} values"
          + (f"; {tree.replaced} ended stations forgotten for new ones at --max-stations"
             if tree.replaced else "")
          + (f"; {tree.refused} messages of stations past --max-stations not bridged"
             if tree.refused else "")
          + (f"; the broker's queue was full {bridge.queue_full} times" if bridge.queue_full
             else ""), file=sys.stderr)
    return 0
