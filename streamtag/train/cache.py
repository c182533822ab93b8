"""The caches of what training reads: the log-mel frames of every track, computed once by the C++
frontend (``FeatureCache``), or its decoded audio for waveform models (``AudioCache``).

Layout: ``root/<key>/<track id>.npy``, one float16 ``(frames, n_mels)`` array per track (the id
percent-quoted so that any id is one safe file name), and ``root/<key>/options.json``. ``key`` is
the first 16 hex digits of the SHA-256 of the frontend options as canonical JSON, so other options
give another folder and features made with different options never mix.

``build`` decodes with PyAV and resamples with soxr (``streamtag.audio.files.load_audio``), computes
``compute_logmel`` — the frontend the daemon runs, so training sees what serving sees — and uses
every core through threads (the extension, the decoder and the resampler release the GIL). A
track with a precomputed MTG-Jamendo mel file is read from that file instead when the options are
the ``mtg_jamendo`` preset the files were made with. Each file is written to a temporary name
and renamed into place, so an interrupted build leaves no half file, and the next build skips
every track whose file is complete. A track that fails (unreadable audio) is reported, not fatal.

``AudioCache`` keeps mono audio at one sample rate, one float16 1-D array per track under
``root/audio-<rate>/``, for waveform models (SampleCNN); a "frame" is a sample there. Both caches
share one file layout and one parallel build (``ArrayCache``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from streamtag.frontend import LogMelOptions, compute_logmel
from streamtag.fsutil import atomic_path, remove_stale_temporaries, write_text_atomic
from streamtag.train.datasets import Track

__all__ = ["ArrayCache", "AudioCache", "CacheReport", "FeatureCache", "options_key"]

log = logging.getLogger(__name__)


def _canonical_options(options: LogMelOptions) -> dict[str, Any]:
    # 16000 and 16000.0 are the same option: floats stay floats so that the key does not depend
    # on how a number was typed.
    data = {}
    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        if ("float" in str(field.type) and isinstance(value, int)
                and not isinstance(value, bool)):
            value = float(value)
        data[field.name] = value
    return data


def options_key(options: LogMelOptions) -> str:
    """16 hex digits naming the cache folder of ``options``."""
    text = json.dumps(_canonical_options(options), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclasses.dataclass
class CacheReport:
    """What one ``build`` did. Throughput counts decoded audio only (not precomputed files)."""

    total: int = 0
    computed: int = 0
    cached: int = 0  # already complete before this build (skipped)
    precomputed: int = 0  # of ``computed``: read from precomputed mel files
    failures: dict[str, str] = dataclasses.field(default_factory=dict)  # track id -> message
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    workers: int = 1

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def realtime_factor(self) -> float:
        """Seconds of audio featurised per wall-clock second, all workers together."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def realtime_factor_per_core(self) -> float:
        return self.realtime_factor / max(1, self.workers)

    def summary(self) -> str:
        text = (f"features: {self.total} tracks, {self.computed} computed "
                f"({self.precomputed} from precomputed mels), {self.cached} already cached, "
                f"{self.failed} failed; {self.audio_seconds:.1f} s of audio in "
                f"{self.wall_seconds:.1f} s on {self.workers} workers = "
                f"{self.realtime_factor:.0f}x real time ({self.realtime_factor_per_core:.0f}x "
                f"per core)")
        for track_id, message in list(self.failures.items())[:5]:
            text += f"\n  failed {track_id}: {message}"
        if self.failed > 5:
            text += f"\n  ... and {self.failed - 5} more"
        return text

    __str__ = summary


class ArrayCache:
    """One float16 ``.npy`` array per track in ``directory``, built in parallel: what the two
    caches share. A subclass says what a track's array is (``compute``) and its shape
    (``row_shape``: the shape of one frame)."""

    directory: Path
    row_shape: tuple[int, ...] = ()
    description = "arrays"  # the progress bar's label

    def path(self, track_id: str) -> Path:
        return self.directory / f"{quote(track_id, safe='')}.npy"

    def has(self, track_id: str) -> bool:
        """True when the track's file is complete (its header and size agree)."""
        return self._frames_in(self.path(track_id)) is not None

    def n_frames(self, track_id: str) -> int:
        """The number of frames cached for the track, read from the file header only."""
        frames = self._frames_in(self.path(track_id))
        if frames is None:
            raise FileNotFoundError(self._not_cached(track_id))
        return frames

    def load(self, track_id: str, start_frame: int = 0,
             n_frames: int | None = None) -> np.ndarray:
        """The cached frames ``[start_frame, start_frame + n_frames)`` (all by default) as
        float32; only those frames are read from disk (memory-mapped)."""
        path = self.path(track_id)
        try:
            frames = np.load(path, mmap_mode="r")
        except FileNotFoundError:
            raise FileNotFoundError(self._not_cached(track_id)) from None
        stop = None if n_frames is None else start_frame + n_frames
        return np.array(frames[start_frame:stop], dtype=np.float32)

    def build(self, tracks: Iterable[Track], workers: int | None = None,
              progress: bool = True) -> CacheReport:
        """Computes the array of every track not cached yet, on ``workers`` threads (default:
        every core); returns what it did."""
        from streamtag.train.progress import progress as progress_bar

        started = time.perf_counter()
        tracks = list({t.id: t for t in tracks}.values())
        workers = workers or _cpu_count()
        report = CacheReport(total=len(tracks), workers=workers)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.prepare()
        remove_stale_temporaries(self.directory)
        todo = [t for t in tracks if not self.has(t.id)]
        report.cached = len(tracks) - len(todo)
        lock = threading.Lock()

        bar = progress_bar(progress, total=len(todo), unit="track", desc=self.description)
        with bar, ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(self.compute, track): track for track in todo}
            for future in as_completed(futures):
                track = futures[future]
                try:
                    seconds, precomputed = future.result()
                except Exception as exc:  # one bad track never stops the build
                    with lock:
                        report.failures[track.id] = f"{type(exc).__name__}: {exc}"
                    log.warning("%s of %s failed: %s", self.description, track.id, exc)
                else:
                    report.computed += 1
                    report.precomputed += precomputed
                    report.audio_seconds += seconds
                bar.update(1)
        report.wall_seconds = time.perf_counter() - started
        log.info("%s", report)
        return report

    # -- what a subclass says ----------------------------------------------------------------

    def prepare(self) -> None:
        """Called once a build has made the folder, before the first track."""

    def compute(self, track: Track) -> tuple[float, bool]:
        """Writes one track's file; returns (seconds of audio decoded, from precomputed)."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------------------

    def _write(self, track_id: str, array: np.ndarray) -> None:
        half = np.ascontiguousarray(array, dtype=np.float16)
        with atomic_path(self.path(track_id)) as temporary, open(temporary, "wb") as f:
            np.save(f, half, allow_pickle=False)

    def _frames_in(self, path: Path) -> int | None:
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(f)
                offset = f.tell()
            size = path.stat().st_size
        except (OSError, ValueError):
            return None
        if (len(shape) != 1 + len(self.row_shape) or tuple(shape[1:]) != self.row_shape
                or dtype != np.float16 or size != offset + math.prod(shape) * 2):
            return None
        return int(shape[0])

    def _not_cached(self, track_id: str) -> str:
        return f"track {track_id!r} is not in the cache {self.directory}; run build first"


class FeatureCache(ArrayCache):
    """Log-mel features of tracks under ``root``, for one set of frontend options: float32
    ``(T, n_mels)`` from ``load``."""

    def __init__(self, root: str | Path, options: LogMelOptions) -> None:
        if not isinstance(options, LogMelOptions):
            raise TypeError(f"options must be a LogMelOptions, got {type(options).__name__}")
        self.options = options
        self.key = options_key(options)
        self.directory = Path(root) / self.key
        self.row_shape = (options.n_mels,)
        self.description = f"features {self.key}"
        self._use_precomputed = options == LogMelOptions.preset("mtg_jamendo")

    def compute(self, track: Track) -> tuple[float, bool]:
        if track.feature_path is not None and self._use_precomputed:
            mel = np.load(track.feature_path, allow_pickle=False)
            if mel.ndim != 2 or mel.shape[0] != self.options.n_mels:
                raise ValueError(f"{track.feature_path}: expected a ({self.options.n_mels}, T) "
                                 f"mel array, got shape {mel.shape}")
            self._write_features(track.id, mel.T)
            return 0.0, True
        if track.audio_path is None:
            raise ValueError("the track has only precomputed mtg_jamendo mels, and these "
                             "options differ from that preset; give the audio files")
        from streamtag.audio.files import load_audio

        audio, _ = load_audio(track.audio_path, self.options.sample_rate)
        features = compute_logmel(audio, self.options)
        if features.shape[0] == 0:
            raise ValueError(f"{track.audio_path}: {len(audio)} samples, shorter than a frame")
        self._write_features(track.id, features)
        return len(audio) / self.options.sample_rate, False

    def _write_features(self, track_id: str, features: np.ndarray) -> None:
        half = np.ascontiguousarray(features, dtype=np.float16)
        if not np.isfinite(half).all():
            raise ValueError("features exceed the float16 range; use a log compression")
        self._write(track_id, half)

    def prepare(self) -> None:
        path = self.directory / "options.json"
        data = _canonical_options(self.options)
        if path.is_file():
            stored = json.loads(path.read_text(encoding="utf-8"))
            if stored != data:
                raise RuntimeError(f"{path} holds other options than key {self.key} stands for; "
                                   f"remove {self.directory}")
            return
        write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def _not_cached(self, track_id: str) -> str:
        return f"track {track_id!r} is not in the feature cache {self.directory}; run build first"


class AudioCache(ArrayCache):
    """Decoded mono audio at ``sample_rate`` for waveform models (SampleCNN): float32 1-D from
    ``load``. Decoding and resampling are the daemon's (``streamtag.audio.files.load_audio``)."""

    def __init__(self, root: str | os.PathLike, sample_rate: float) -> None:
        self.sample_rate = float(sample_rate)
        self.directory = Path(root) / f"audio-{self.sample_rate:g}"
        self.description = "audio"

    def compute(self, track: Track) -> tuple[float, bool]:
        if track.audio_path is None:
            raise ValueError("waveform models need the audio files; this track has only "
                             "precomputed features")
        from streamtag.audio.files import load_audio

        audio, _ = load_audio(track.audio_path, self.sample_rate)
        self._write(track.id, np.clip(audio, -65504, 65504))
        return len(audio) / self.sample_rate, False


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
