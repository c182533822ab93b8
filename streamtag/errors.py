"""The few errors streamtag raises itself. Each message says what went wrong and what to do."""


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
