"""streamtag: a streaming audio tagger.

The log-mel frontend is re-exported here; the rest lives in its own modules, one job each:
sources, engine, inference, smoothing, protocol, publish, daemon, nets, train, web.
"""

from streamtag.frontend import (
    FrameRing,
    LogMelOptions,
    OnlineLogMel,
    compute_logmel,
    mel_filterbank,
)

__version__ = "0.1.0"

__all__ = [
    "FrameRing",
    "LogMelOptions",
    "OnlineLogMel",
    "compute_logmel",
    "mel_filterbank",
]
