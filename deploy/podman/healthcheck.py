#!/usr/bin/env python
"""The image's HEALTHCHECK (installed as streamtag-healthcheck): probes what the container's
main process, a streamtag command, serves. Exit 0: healthy; 1: not.

  run        GET /healthz on its metrics port ([metrics] port or --metrics-port; no port: the
             process runs, which is all there is to check)
  dashboard  GET /healthz on its HTTP port
  record     GET /metrics on --metrics-port when given
  proxy      its frontend and backend TCP ports accept a connection
  others     one-shot commands (tag, models, --help): no server, so healthy while they run

The command line is read from /proc/1/cmdline and parsed with streamtag's own parser, so the
probe follows the flags and config file the container was started with.
"""

from __future__ import annotations

import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

TIMEOUT_S = 4.0
WILDCARDS = {"", "0.0.0.0", "::", "*"}


def main_command() -> list[str]:
    """The arguments after `streamtag` in PID 1's command line."""
    argv = [a for a in Path("/proc/1/cmdline").read_bytes().decode(errors="replace").split("\0")
            if a]
    for i, arg in enumerate(argv):
        if Path(arg).name == "streamtag":
            return argv[i + 1:]
    return []


def local(host: str | None) -> str:
    return "127.0.0.1" if host is None or host in WILDCARDS else host


def http_ok(host: str, port: int, path: str) -> bool:
    url = f"http://{local(host)}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return False


def tcp_ok(endpoint: str | None) -> bool:
    if not endpoint or not endpoint.startswith("tcp://"):
        return True  # ipc:// or none: nothing to connect to from here
    parsed = urlparse(endpoint)
    try:
        with socket.create_connection((local(parsed.hostname), parsed.port), TIMEOUT_S):
            return True
    except OSError as exc:
        print(f"{endpoint}: {exc}", file=sys.stderr)
        return False


def healthy(argv: list[str]) -> bool:
    from streamtag.cli import build_parser

    if not argv or argv[0].startswith("-"):
        return True
    args = build_parser().parse_args(argv)
    if args.command == "run":
        from streamtag.daemon.config import DaemonConfig, load_config, with_overrides

        config = load_config(args.config) if args.config else DaemonConfig()
        config = with_overrides(config, metrics_port=args.metrics_port)
        if not config.metrics.port:
            return True
        return http_ok(config.metrics.address, config.metrics.port, "/healthz")
    if args.command == "dashboard":
        if not args.port:
            return True  # --port 0: a port the kernel picked, which nothing here records
        return http_ok(args.host, args.port, "/healthz")
    if args.command == "record":
        if args.metrics_port is None:
            return True
        return http_ok(args.metrics_address, args.metrics_port, "/metrics")
    if args.command == "proxy":
        return tcp_ok(args.frontend) and tcp_ok(args.backend)
    return True


if __name__ == "__main__":
    sys.exit(0 if healthy(main_command()) else 1)
