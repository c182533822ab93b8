"""The ``streamtag`` command line: the command modules in the order the help lists them, and
dispatch. Each module of streamtag.commands adds its own parser (``add_commands(sub)``) and
imports what its command needs only when the command runs, so that parsing loads none of it
(tests/test_cli_manners.py checks)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Iterator

# The modules of streamtag.commands, in help order: daily commands first, then the demo and
# tools, training and development last (train adds train, pretrain, eval and ensemble).
COMMANDS = ("run", "listen", "tag", "dashboard", "record", "history", "status", "control",
            "models", "demo", "devices", "proxy", "bridge", "keys", "protocol", "features",
            "train")


def version_text() -> str:
    """What ``--version`` prints: the package's version, its one place (pyproject.toml reads
    it from there)."""
    from streamtag import __version__

    return f"streamtag {__version__}"


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every command takes: ``-q`` / ``-v`` and ``--version``."""
    talk = parser.add_mutually_exclusive_group()
    talk.add_argument("-q", "--quiet", action="store_true",
                      help="only data and errors: no notes or progress on stderr")
    talk.add_argument("-v", "--verbose", action="count", default=0,
                      help="more logging on stderr (-vv: debug)")
    parser.add_argument("--version", action="version", version=version_text())


def commands(parser: argparse.ArgumentParser, prefix: str = ""
             ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command of ``parser`` that runs (``models list``, not ``models``), by its full
    name, with its parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from commands(child, f"{prefix} {name}".strip())
            return
    if prefix:
        yield prefix, parser


DAILY = "run, listen, tag, dashboard, record, history, status, control, models"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamtag", description="Streaming audio tagger.",
        epilog=f"Daily commands first ({DAILY}); then the demo and tools; training and "
               "development last. Every command takes -q, -v and --help; errors go to stderr "
               "with exit status 2 for a command line or config that cannot work and 1 for "
               "work that failed (docs/operations.md, Command line).")
    parser.add_argument("--version", action="version", version=version_text())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"streamtag.commands.{name}").add_commands(sub)
    for _, command in commands(parser):
        add_common_flags(command)
        command.set_defaults(command_parser=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    from streamtag.commands import log_level, missing_extra

    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said with the command's own usage line, not the top level's
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    # (a no-op where the host process set up logging already, as pytest does)
    logging.basicConfig(level=log_level(args),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except BrokenPipeError:
        # The reader went away (`streamtag demo | head`): stop quietly, as command-line tools
        # do. Python flushes stdout once more at exit; point it at /dev/null so that cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except ModuleNotFoundError as error:
        status = missing_extra(args.command, error)
        if status is None:
            raise
        return status


if __name__ == "__main__":
    sys.exit(main())
