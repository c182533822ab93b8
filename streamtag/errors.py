"""The few errors streamtag raises itself. Each message says what went wrong and what to do;
``first_lines`` turns another library's long error into one line of such a message."""


class StreamtagError(Exception):
    """Base of streamtag's own errors."""


class ConfigError(StreamtagError, ValueError):
    """A bad configuration key or value; the message names the key and the allowed values."""


class ModelError(StreamtagError):
    """A model file that cannot be used; the message names the file and the reason."""


class SourceError(StreamtagError):
    """An audio source that cannot be opened or read; the message names the source."""


class ProtocolError(StreamtagError, ValueError):
    """A wire message that cannot be decoded (unknown major version, malformed frames)."""


def first_lines(error: BaseException, count: int = 4) -> str:
    """The first ``count`` non-empty lines of an error's text, joined: TorchScript's compiler,
    the ONNX exporter and ONNX Runtime raise messages of many lines (source excerpts, graph
    dumps), and one of ours says why in one line."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return " | ".join(lines[:count]) or type(error).__name__
