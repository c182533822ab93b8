"""``streamtag keys generate``: a CURVE key pair for encrypted, authenticated sockets."""

from __future__ import annotations

import argparse
import json

from streamtag.commands import refused
from streamtag.errors import ConfigError


def add_commands(sub: argparse._SubParsersAction) -> None:
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
    g.set_defaults(func=cmd_keys)


def cmd_keys(args: argparse.Namespace) -> int:
    from streamtag.wire.security import generate_keys

    try:
        public, secret = generate_keys(args.directory, args.name)
    except ConfigError as exc:
        return refused("keys generate", exc)
    if args.json:
        print(json.dumps({"public": str(public), "secret": str(secret)}))
        return 0
    print(f"public key: {public}  (give it to the other side: a subscriber's goes in the "
          "daemon's [security] client_keys folder, an administrator's in admin_keys)\n"
          f"secret key: {secret}  (mode 0600; keep it here)")
    return 0
