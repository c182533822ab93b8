"""Audio inputs, one module per kind; each yields mono float32 chunks at the consumer's rate with
their absolute sample index. ``parse_source`` turns a spec string into a source:

- ``file:PATH`` or an existing path: FileSource (options ``realtime``, ``speed``, ``loop``)
- ``http://…``, ``https://…``: HttpSource (``reconnect``, ``max_backoff_s``,
  ``initial_backoff_s``, ``read_timeout_s``, ``max_reconnects``)
- ``device:NAME_OR_INDEX``: DeviceSource (``blocksize``, ``channels``, ``device_rate``)
- ``pipe:``: PipeSource, raw PCM on standard input (``format``, ``rate``, ``channels``,
  ``stream``)
"""

from __future__ import annotations

import inspect
from pathlib import Path

from streamtag.errors import SourceError
from streamtag.sources.base import AudioChunk, Source, StatusCallback
from streamtag.sources.device import DeviceSource, list_input_devices
from streamtag.sources.file import FileSource
from streamtag.sources.http import HttpSource, strip_credentials
from streamtag.sources.pipe import PipeSource
from streamtag.sources.resample import Resampler

__all__ = ["AudioChunk", "DeviceSource", "FileSource", "HttpSource", "PipeSource", "Resampler",
           "Source", "StatusCallback", "list_input_devices", "parse_source"]

KNOWN_KINDS = "file:PATH (or an existing file), http(s)://URL, device:NAME_OR_INDEX, pipe:"


def parse_source(spec: str, **options) -> Source:
    """The source a spec names, built with ``options``; SourceError for an unknown scheme, a
    missing file or an option the kind does not take."""
    text = str(spec).strip()
    scheme, sep, rest = text.partition(":")
    scheme = scheme.lower() if sep else ""
    if scheme == "file":
        if not rest:
            raise SourceError(f"source {text!r} names no file; write file:PATH")
        return _build(FileSource, "file", options, rest)
    if scheme in ("http", "https"):
        return _build(HttpSource, "http", options, text)
    if scheme == "device":
        return _build(DeviceSource, "device", options, rest or "default")
    if scheme == "pipe":
        if rest not in ("", "-"):
            raise SourceError(f"pipe source {strip_credentials(text)!r}: write just 'pipe:' and "
                              f"give format=, rate=, channels= as options")
        return _build(PipeSource, "pipe", options)
    if text and Path(text).is_file():
        return _build(FileSource, "file", options, text)
    raise SourceError(f"unknown source {strip_credentials(text)!r}: neither an existing file nor "
                      f"a known kind; use one of: {KNOWN_KINDS}")


def _build(cls: type[Source], kind: str, options: dict, *args) -> Source:
    accepted = [name for name, p in inspect.signature(cls).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise SourceError(f"{kind} sources take no option {', '.join(map(repr, unknown))}; "
                          f"their options are: {', '.join(accepted)}")
    return cls(*args, **options)
