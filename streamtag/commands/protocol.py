"""``streamtag protocol schema [--asyncapi]``: the wire protocol as JSON Schema (draft
2020-12) or as an AsyncAPI 3 document, made from the code's own declaration of the messages
(streamtag.wire.schema), for a subscriber written in any language."""

from __future__ import annotations

import argparse
import json


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("protocol", help="the wire protocol's schema, for subscribers")
    protocol_sub = p.add_subparsers(dest="protocol_command", required=True)
    s = protocol_sub.add_parser(
        "schema", help="print the JSON Schema (2020-12) of every message, or with --asyncapi "
                       "the AsyncAPI 3 document of the feed and the control socket")
    s.add_argument("--asyncapi", action="store_true",
                   help="the AsyncAPI 3.0 document rather than the JSON Schema")
    s.set_defaults(func=cmd_schema)


def document(asyncapi: bool = False) -> str:
    """What ``streamtag protocol schema`` prints: indented JSON, keys in order, one newline
    at the end (docs/ keeps the same text: tests/test_docs.py compares)."""
    from streamtag.wire import schema

    made = schema.asyncapi() if asyncapi else schema.json_schema()
    return json.dumps(made, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def cmd_schema(args: argparse.Namespace) -> int:
    print(document(args.asyncapi), end="")
    return 0


if __name__ == "__main__":  # python -m streamtag.commands.protocol [--asyncapi]
    import sys

    print(document("--asyncapi" in sys.argv[1:]), end="")
