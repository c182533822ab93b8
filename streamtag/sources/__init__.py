"""Audio inputs, one module per kind; each yields mono float32 chunks at the consumer's rate with
their absolute sample index. Each kind's class declares its ``kind``, the ``schemes`` of the
specs that name it and its ``spec_help``; ``KINDS`` lists them, and the spec parser, the
kind table and the help texts are made from it. ``parse_spec`` reads a spec string (its kind
and target) and ``parse_source`` builds the source it names:

- ``file:PATH`` or an existing path: FileSource (options ``realtime``, ``speed``, ``loop``)
- ``http://…``, ``https://…``: HttpSource (``reconnect``, ``max_backoff_s``,
  ``initial_backoff_s``, ``read_timeout_s``, ``max_reconnects``, ``realtime``,
  ``max_bytes_per_audio_s``; ``host_policy``, a ``HostPolicy``, from Python only: the daemon
  gives it to sources added at run time)
- ``device:NAME_OR_INDEX``: DeviceSource (``blocksize``, ``channels``, ``device_rate``,
  ``max_queue_s``, ``stall_timeout_s``, ``reconnect``, ``initial_backoff_s``, ``max_backoff_s``,
  ``max_reconnects``)
- ``pipe:``: PipeSource, raw PCM on standard input (``format``, ``rate``, ``channels``,
  ``block_frames``; ``stream`` from Python only)

A new kind is its module, with a ``Source`` class that declares those three, and one entry in
``KINDS``; what the daemon's control socket may open of it is the daemon's policy
(``streamtag.daemon.policy.ControlPolicy``), which refuses a kind it has no rule for.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import inspect
import typing
from pathlib import Path

from streamtag import values
from streamtag.errors import SourceError
from streamtag.sources.base import AudioChunk, Source, StatusCallback
from streamtag.sources.device import DeviceSource, list_input_devices
from streamtag.sources.file import FileSource
from streamtag.sources.hosts import HostPolicy, redact_url
from streamtag.sources.http import HttpSource
from streamtag.sources.pipe import PipeSource
from streamtag.sources.resample import Resampler

__all__ = ["KINDS", "AudioChunk", "DeviceSource", "FileSource", "HostPolicy", "HttpSource",
           "PipeSource", "Resampler", "Source", "SourceSpec", "StatusCallback",
           "list_input_devices", "parse_source", "parse_spec", "spec_help"]

# Every kind, in the order help texts name them.
KINDS: tuple[type[Source], ...] = (FileSource, HttpSource, DeviceSource, PipeSource)
PATH_KIND: type[Source] = FileSource  # what a spec of no known scheme names, when it is a file
_KINDS: dict[str, type[Source]] = {cls.kind: cls for cls in KINDS}
_SCHEMES: dict[str, type[Source]] = {scheme: cls for cls in KINDS for scheme in cls.schemes}


def spec_help(kinds: tuple[type[Source], ...] = KINDS, *, code: bool = False) -> str:
    """How specs of ``kinds`` are written, as help texts and errors list them (``code``: each
    in Markdown's backticks)."""
    written = [(f"`{cls.spec_help}`" if code else cls.spec_help)
               + (" or a path" if cls is PATH_KIND else "") for cls in kinds]
    return written[0] if len(written) == 1 else f"{', '.join(written[:-1])} or {written[-1]}"


KNOWN_KINDS = spec_help()


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """A spec as the parser reads it, and exactly what a source is built from: ``kind`` (a
    ``KINDS`` class's), ``target`` (as the kind's ``target_of`` reads it: the file's path as
    written, the URL, the device's name or index; "" for pipe) and ``text`` (the spec without
    its surrounding blanks). Whoever checks a spec (the daemon, for sources added over the
    control socket) checks this, so that what is checked is what is opened."""

    kind: str
    target: str
    text: str


def parse_spec(spec: str) -> SourceSpec:
    """The kind and target a spec names; SourceError for an unknown scheme or a missing
    file."""
    text = str(spec).strip()
    scheme, sep, rest = text.partition(":")
    cls = _SCHEMES.get(scheme.lower()) if sep else None
    if cls is not None:
        return SourceSpec(cls.kind, cls.target_of(rest, text), text)
    if text and Path(text).is_file():
        return SourceSpec(PATH_KIND.kind, text, text)
    raise SourceError(f"unknown source {redact_url(text)!r}: neither an existing file nor "
                      f"a known kind; use one of: {KNOWN_KINDS}")


def parse_source(spec: str | SourceSpec, **options) -> Source:
    """The source a spec (text, or as ``parse_spec`` read it) names, built with ``options``;
    SourceError for an unknown scheme, a missing file or an option the kind does not take."""
    parsed = spec if isinstance(spec, SourceSpec) else parse_spec(spec)
    cls = _KINDS[parsed.kind]
    return _build(cls, parsed.kind, options, *cls.arguments(parsed.target))


@functools.cache
def _options_of(cls: type[Source]) -> tuple[list[str], dict]:
    """A kind's option names and types, found once: a sharded daemon checks every source of
    the whole list (10,000s) at start, and inspecting costs about a millisecond a call."""
    accepted = [name for name, p in inspect.signature(cls).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY]
    return accepted, typing.get_type_hints(cls.__init__)


# A source option's number is finite, which the message says.
_WORDS = values.Words(number="a finite number")
# Options given from Python only, as objects: no TOML or JSON value is one of them.
_FROM_PYTHON = {typing.BinaryIO: "a binary stream (given from Python, not in a config)",
                HostPolicy: "a HostPolicy (given by the daemon, not in a config or a request)"}
_DATA = (str, bytes, int, float, list, dict, datetime.date, datetime.time)


def _build(cls: type[Source], kind: str, options: dict, *args) -> Source:
    """The source, once every option is one it takes, of the type it takes: a wrong type would
    otherwise fail later with a TypeError that does not name the option."""
    accepted, hints = _options_of(cls)
    unknown = sorted(set(options) - set(accepted))
    if unknown:  # the options a config or a request may give (not those given from Python)
        shown = [name for name in accepted if not _from_python(hints.get(name, typing.Any))]
        raise SourceError(f"{kind} sources take no option {', '.join(map(repr, unknown))}; "
                          f"their options are: {', '.join(shown)}")
    for name, value in options.items():
        where = f"{kind} source option {name!r}"
        annotation = hints.get(name, typing.Any)
        objects = _from_python(annotation)
        if not objects:
            values.coerce(value, annotation, where, SourceError, words=_WORDS)
        elif isinstance(value, _DATA):
            raise values.must_be(value, where, SourceError, objects[0])
    return cls(*args, **options)


def _from_python(annotation) -> list[str]:
    """What an option of this type must be where only Python gives it; empty for the others."""
    return [_FROM_PYTHON[t] for t in (annotation, *typing.get_args(annotation))
            if t in _FROM_PYTHON]
