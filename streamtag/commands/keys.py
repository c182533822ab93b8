"""``streamtag keys generate``: a CURVE key pair for encrypted, authenticated sockets."""

from __future__ import annotations

import argparse

from streamtag.wire.security import generate_keys


def cmd_keys(args: argparse.Namespace) -> int:
    public, secret = generate_keys(args.directory, args.name)
    print(f"public key: {public}  (give it to the other side)\nsecret key: {secret}  "
          "(keep it here)")
    return 0
