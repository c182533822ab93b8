"""``streamtag keys generate``: a CURVE key pair for encrypted, authenticated sockets."""

from __future__ import annotations

import argparse
import json

from streamtag.commands import refused
from streamtag.errors import ConfigError
from streamtag.wire.security import generate_keys


def cmd_keys(args: argparse.Namespace) -> int:
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
