"""The command line's flag types (a port, a count, a span of time, an endpoint, a stream id),
and the flags several commands share: a model, its backend and precision, and how a client
reaches a daemon (``add_daemon_client_flags``). Only argparse and light modules here: every
command's parser is built before any command runs."""

from __future__ import annotations

import argparse
import re

from streamtag.wire.sockets import DEFAULT_CONTROL_ENDPOINT


def port_number(text: str) -> int:
    """A flag's TCP port: an integer 0-65535 (argparse names the flag in its error)."""
    try:
        port = int(text, 10)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port: give a whole number "
                                         "from 1 to 65535 (0: off, or any free port)")
    return port


def count_at_least_1(text: str) -> int:
    """A flag's count: a whole number >= 1 (argparse names the flag in its error)."""
    try:
        value = int(text, 10)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count: give a whole number, 1 or "
                                         "more")
    return value


def _seconds(text: str, zero_allowed: bool) -> float:
    """A flag's span of time in seconds: finite, and above 0 or (``zero_allowed``) 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    not_below = 0 <= value if zero_allowed else 0 < value
    if not (not_below and value < float("inf")):
        wanted = "seconds, 0 or more" if zero_allowed else "seconds above 0"
        raise argparse.ArgumentTypeError(f"{text!r} is not a span of time: give a number of "
                                         f"{wanted}")
    return value


def seconds_above_0(text: str) -> float:
    """A flag's span of time: a number of seconds > 0 (argparse names the flag)."""
    return _seconds(text, zero_allowed=False)


def seconds_from_0(text: str) -> float:
    """A flag's wait: a number of seconds >= 0 (0: do not wait)."""
    return _seconds(text, zero_allowed=True)


def zmq_endpoint(text: str) -> str:
    """A ZeroMQ endpoint flag, checked where a mistyped one would fail later with a vague
    error (the config file's check: a tcp:// port must be 1-65535 or *)."""
    from streamtag.daemon.config import check_endpoint
    from streamtag.errors import ConfigError

    try:
        check_endpoint("the endpoint", text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def stream_id(text: str) -> str:
    """A stream id argument (argparse names the argument in its error)."""
    from streamtag.errors import ProtocolError
    from streamtag.wire.protocol import validate_stream_id

    try:
        return validate_stream_id(text)
    except ProtocolError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def source_flag(text: str) -> str:
    """A ``--source`` flag, ``[ID=]SPEC``: an ID that is not a valid stream id (a space in it)
    is named as such, rather than read as part of a spec of an unknown kind."""
    from pathlib import Path

    from streamtag.wire.protocol import STREAM_ID_PATTERN

    given, sep, _ = text.partition("=")
    if (sep and not re.fullmatch(STREAM_ID_PATTERN, given) and "/" not in given
            and not Path(text).exists()):
        raise argparse.ArgumentTypeError(
            f"the stream id {given!r} in {text!r} is not valid: an id is 1 to 128 of the "
            "characters A-Z a-z 0-9 _ . : - (no spaces), as in my_radio=http://...")
    return text


def add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model file or installed model name, e.g. musicnn-msd "
                        "(default: the shipped model)")


def add_backend(parser: argparse.ArgumentParser, default: str | None) -> None:
    from streamtag.model import BACKENDS

    parser.add_argument("--backend", default=default, choices=BACKENDS,
                        help="what runs the model: auto (ONNX Runtime on the CPU, TorchScript "
                             "on CUDA), onnxruntime or torch")


def add_precision(parser: argparse.ArgumentParser, default: str | None) -> None:
    from streamtag.model import PRECISIONS

    parser.add_argument("--precision", default=default, choices=PRECISIONS,
                        help="fp32, or int8: the model file's int8 graph on ONNX Runtime, made "
                             "by `streamtag models quantize` (docs/operations.md)")


def add_client_keys(parser: argparse.ArgumentParser, whose: str) -> None:
    """``--server-key`` and ``--client-key``: CURVE keys of a client of ``whose`` sockets."""
    parser.add_argument("--server-key", metavar="FILE",
                        help=f"{whose} public key file (NAME.key), for CURVE")
    parser.add_argument("--client-key", metavar="FILE",
                        help="this client's secret key file (NAME.key_secret)")


def add_daemon_client_flags(parser: argparse.ArgumentParser, *, control: str | None = None,
                            wait: float | None = 0.0, whose: str = "the daemon's") -> None:
    """How a command reaches a daemon's control socket: ``--control``, ``--wait``,
    ``--token-file`` and the CURVE keys (``add_client_keys``), as
    ``streamtag.commands.status.client_credentials`` reads them. ``control``: where asking the
    daemon is optional, what ``--control`` is for (it then has no default, and the others apply
    with it); ``wait``: ``--wait``'s default (None: no ``--wait``)."""
    given = "" if control is None else "with --control: "
    if control is None:
        parser.add_argument("--control", metavar="ENDPOINT", type=zmq_endpoint,
                            default=DEFAULT_CONTROL_ENDPOINT,
                            help=f"the daemon's control endpoint (default "
                                 f"{DEFAULT_CONTROL_ENDPOINT})")
    else:
        parser.add_argument("--control", metavar="ENDPOINT", type=zmq_endpoint, help=control)
    if wait is not None:
        default = "default 0: ask once, for 2 s" if wait == 0 else \
            f"default {wait:g}; 0: ask once, for 2 s"
        parser.add_argument("--wait", type=seconds_from_0, default=wait, metavar="SECONDS",
                            help=f"{given}how long to wait for a daemon that is not up yet "
                                 f"({default})")
    parser.add_argument("--token-file", metavar="FILE",
                        help=f"{given}the daemon's control token file, where it is not the "
                             "default (control.token in streamtag's folder)")
    add_client_keys(parser, whose)
