"""The engine's settings, the daemon config's ``[engine]``, ``[smoothing]``, ``[mood]``,
``[health]`` and ``[content]`` sections. Free of numpy and torch, so that reading a config or
building the command line's parser stays cheap; the engine itself is in streamtag.engine.batching,
and each section's work in the module of its name (smoothing, mood, health, content)."""

from __future__ import annotations

import dataclasses
import os

from streamtag import values
from streamtag.errors import ConfigError
from streamtag.model import BACKENDS, PRECISIONS

# engine.max_batch left out: on the CPU the cheapest batch size up to this, measured on the model
# as it loads (streamtag.model.inference.cheapest_batch); on CUDA this.
CPU_MAX_BATCH = 8
CUDA_MAX_BATCH = 64
# Source threads at work at once by default, however many cores: they share one GIL, and more of
# them spent the difference handing it over (system time), as measured in docs/operations.md.
DEFAULT_DECODERS = 2
# Upper bounds: a longer wait overflows the condition timeout and kills the inference thread;
# the frame ring holds window + 4 hops of frames per stream, so a huge hop would allocate GBs.
MAX_WAIT_MS = 60_000.0
MAX_HOP_SECONDS = 60.0
MAX_THREADS = 256  # workers, threads and decoders each

SILENCE_DBFS = -50.0  # a window quieter than this has no music to judge (broadcast practice)
# The mood's words (streamtag.engine.mood): a new main word is shown once it has held this much
# audio (a clear change); "no music" once windows without music have lasted this long (0: at the
# first, so that a screen clears within 3 s of speech or dead air, docs/venue.md); the
# valence/arousal point's exponential average.
DWELL_S = 3.0
SILENCE_DWELL_S = 0.0
POINT_TIME_CONSTANT_S = 3.0

# Broadcast monitors' usual dead-air alarm: 10 s below -50 dBFS (the mood display's silence
# uses the same level).
DEFAULT_SILENCE_DBFS = SILENCE_DBFS
DEFAULT_SILENCE_S = 10.0
# A window of a few seconds with this many samples at the rail is clipping, not one loud peak
# of a 16-bit master that happens to touch full scale.
DEFAULT_CLIP_SAMPLES = 10
# A crest factor this low with no onsets is a stuck tone (sine 3.01 dB, triangle 4.77 dB), not
# music (8-20 dB over a window of seconds).
DEFAULT_TONE_CREST_DB = 5.0
MIN_DBFS = -120.0  # the frontend's floor: digital silence


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """How the engine batches windows and runs the model."""

    max_batch: int | None = values.field(
        None, minimum=1, expected=f"an integer >= 1 (or left out: on the CPU measured up to "
                                  f"{CPU_MAX_BATCH}, {CUDA_MAX_BATCH} on CUDA)",
        help=f"windows per forward pass; left out: {CUDA_MAX_BATCH} on CUDA, and on the CPU the "
             f"size up to {CPU_MAX_BATCH} at which this model's forward costs least per window, "
             "measured as it loads")
    max_wait_ms: float = values.field(
        10.0, minimum=0, maximum=MAX_WAIT_MS,
        help="how long a due window may wait for others to fill a batch")
    hop_seconds: float | None = values.field(
        None, positive=True, maximum=MAX_HOP_SECONDS, flag="--hop-seconds",
        help="seconds between a stream's windows; left out: the model file's hop")
    max_pending_windows: int = values.field(
        16, minimum=1, help="per stream: windows queued before its source waits (or, live, "
                            "they are dropped)")
    backend: str = values.field(
        "auto", choices=BACKENDS, flag="--backend",
        help="auto: ONNX Runtime on the CPU, TorchScript on CUDA")
    precision: str = values.field(
        "fp32", choices=PRECISIONS, flag="--precision",
        help="int8: the model file's int8 graph on ONNX Runtime (opt-in; streamtag models "
             "quantize makes it)")
    workers: int = values.field(
        1, minimum=1, maximum=MAX_THREADS, expected=f"an integer from 1 to {MAX_THREADS}",
        help="inference threads, each running whole batches of one shared model")
    threads: int = values.field(
        1, minimum=1, maximum=MAX_THREADS, expected=f"an integer from 1 to {MAX_THREADS}",
        help="intra-op threads of one forward pass")
    # (streamtag.sources.decode_turns)
    decoders: int = values.field(
        0, minimum=0, maximum=MAX_THREADS,
        expected=f"an integer from 0 (one per core left over from the workers) to {MAX_THREADS}",
        help=f"source threads decoding at once, taking turns; 0: one per core left over from "
             f"the inference threads, at least 1 and at most {DEFAULT_DECODERS}")
    # (streamtag.model.window_reuse)
    reuse_windows: bool = values.field(
        True, help="overlapping windows share work: a window's forward takes what an earlier "
                   "window of its stream computed for the frames they share (the same "
                   "probabilities within 1e-4); false computes every window whole")

    def __post_init__(self) -> None:
        values.check_fields(self, "engine", ConfigError)
        if self.precision == "int8" and self.backend == "torch":
            raise ConfigError("engine.precision int8 serves the model file's int8 graph on ONNX "
                              "Runtime: set engine.backend to auto or onnxruntime, or precision "
                              "to fp32")

    def batch_limit(self, device_type: str) -> int:
        """``max_batch``, or its largest default for a model on ``device_type`` ("cpu",
        "cuda"); on the CPU the engine measures the model for a smaller one
        (``streamtag.engine.plan``)."""
        if self.max_batch is not None:
            return self.max_batch
        return CUDA_MAX_BATCH if device_type == "cuda" else CPU_MAX_BATCH

    def decoder_turns(self) -> int:
        """How many source threads work at once: ``decoders``, or for 0 the cores this process
        may use less the inference threads, at least one and at most ``DEFAULT_DECODERS``."""
        if self.decoders:
            return self.decoders
        spare = len(os.sched_getaffinity(0)) - self.workers * self.threads
        return max(1, min(DEFAULT_DECODERS, spare))


@dataclasses.dataclass(frozen=True)
class SmoothingConfig:
    time_constant_s: float = values.field(
        2.0, minimum=0, help="the scores' exponential moving average, seconds; 0: no smoothing")
    margin: float = values.field(
        0.1, minimum=0, help="a tag turns off below its threshold less this (or below half "
                             "the threshold, whichever is higher)")
    min_on_s: float = values.field(
        2.0, minimum=0, help="a tag that falls below its threshold stays on until it has been "
                             "on this long; silence, speech or the stream's end turn it off at "
                             "once, back-dated, so such a span can be shorter "
                             "(docs/protocol.md)")
    min_off_s: float = values.field(2.0, minimum=0, help="a tag stays off at least this long")

    def __post_init__(self) -> None:
        values.check_fields(self, "smoothing", ConfigError)


@dataclasses.dataclass(frozen=True)
class MoodConfig:
    """The ``[mood]`` section of the daemon's config."""

    enabled: bool = values.field(True, help="false: scores carry no mood")
    dwell_s: float = values.field(
        DWELL_S, minimum=0, maximum=3600,
        help="audio seconds a new main word must hold before it is shown, where the music "
             "clearly changed (a change at a border between words holds longer)")
    silence_dwell_s: float = values.field(
        SILENCE_DWELL_S, minimum=0, maximum=3600,
        help="audio seconds that windows of silence, speech or anything not music must last, "
             "from the first, before \"no music\" is shown; 0: at the first")
    time_constant_s: float = values.field(
        POINT_TIME_CONSTANT_S, minimum=0, maximum=3600,
        help="the valence/arousal point's exponential average, seconds")

    def __post_init__(self) -> None:
        values.check_fields(self, "mood", ConfigError)


@dataclasses.dataclass(frozen=True)
class HealthConfig:
    """The ``[health]`` section of the daemon's config: dead air and clipping."""

    enabled: bool = values.field(
        True, help="false: no dead-air detection (tags then follow the model on silence too)")
    silence_dbfs: float = values.field(
        DEFAULT_SILENCE_DBFS, minimum=MIN_DBFS, maximum=0,
        help="a window whose RMS level is below this (dBFS) is quiet")
    silence_s: float = values.field(
        DEFAULT_SILENCE_S, positive=True, maximum=24 * 3600,
        help="quiet audio this long (seconds) is silence: dead air")
    clip_samples: int = values.field(
        DEFAULT_CLIP_SAMPLES, minimum=1,
        help="samples at full scale that make a window count as clipping")
    tone_crest_db: float = values.field(
        DEFAULT_TONE_CREST_DB, minimum=0, maximum=20,
        help="a window with no onset whose peak is at most this many dB above its RMS is a "
             "stuck tone; 0 turns tone detection off")
    # measured by the sources at the input's own rate and channels (streamtag.audio.loudness)
    loudness: bool = values.field(
        False, flag="--loudness",
        help="EBU R128 momentary and short-term loudness (LUFS) per window; a stereo stream "
             "of the default model then costs about 6 % more CPU")

    def __post_init__(self) -> None:
        values.check_fields(self, "health", ConfigError)


@dataclasses.dataclass(frozen=True)
class ContentConfig:
    """The ``[content]`` section of the daemon's config: what each window's audio is."""

    enabled: bool = values.field(
        True, help="false: no content decision (tags then follow the model over speech too)")
    min_s: float = values.field(
        2.0, minimum=0, maximum=3600,
        help="speech, noise or a tone this long (seconds) turns every tag off where it began")

    def __post_init__(self) -> None:
        values.check_fields(self, "content", ConfigError)
