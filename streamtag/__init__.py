"""streamtag: a streaming audio tagger.

The log-mel frontend is re-exported here; the rest lives in packages by job, in the order the
data flows (docs/architecture.md): audio and sources, model, engine, catalog, wire, daemon and
history, web, and the commands; nets and train make the models.
"""

from streamtag.frontend import (
    FrameRing,
    LogMelOptions,
    OnlineLogMel,
    compute_logmel,
    mel_filterbank,
)

__version__ = "0.1.0"  # the one place of the version: pyproject.toml reads it

__all__ = [
    "FrameRing",
    "LogMelOptions",
    "OnlineLogMel",
    "compute_logmel",
    "mel_filterbank",
]
