"""Per-tag thresholds for models that have none, from the scores they give on music.

musicnn's taggers were trained without decision thresholds, and the Million Song Dataset
models' probabilities rarely pass 0.5 (their tags are sparse), so 0.5 would show nothing. The
rule (docs/models.md, "Thresholds"):

1. Score the audio as the daemon does (same decoder, frontend, windows and EMA smoothing) and
   take each window's smoothed score per tag.
2. A budget of ``B`` active tags per window on average is shared among the tags in proportion
   to their mean score on the audio: tag ``t`` gets the share ``s_t = B * mean_t / sum(mean)``
   of windows, clipped to [``min_share``, ``max_share``]; its threshold is the score exceeded
   on that share of windows (the ``1 - s_t`` quantile). A tag the model hears often is active
   often; a tag it barely hears is active rarely, never always.
3. A tag is never active below ``relative_floor`` times the median over windows of the top
   smoothed score, so a tag the audio never evokes (a near-zero score everywhere) does not get
   a near-zero threshold that any other music would pass.
4. ``B`` is picked from ``budgets`` as the one that puts the most windows at ``min_active`` to
   ``max_active`` active tags (1 to 6), counted by running the daemon's smoother (its
   hysteresis and minimum durations included, default ``[smoothing]`` settings) over the
   windows with those thresholds.

Installed models carry the thresholds this rule gives on real music: fitted at development time
on freely licensed recordings that Debian ships (``models/thresholds/fit_real_music.py``), of
which only the numbers are stored (``real_music_thresholds.json``, beside this module), keyed by
the checkpoints' hashes. Weights without stored thresholds get the rule on streamtag's synthetic
music (a fixed, documented set of pieces). ``streamtag models calibrate NAME AUDIO...`` replaces
either with the thresholds the same rule gives on the user's own recordings.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from streamtag.engine.batching import Engine, EngineConfig, EngineSink, WindowResult
from streamtag.engine.health import HealthConfig
from streamtag.engine.smoothing import Smoother, SmoothingConfig, TagEvent
from streamtag.errors import ModelError, SourceError
from streamtag.model import stored
from streamtag.model.inference import InferenceModel
from streamtag.model.manifest import Manifest, read_manifest
from streamtag.sources import FileSource

# The default thresholds' audio: streamtag's synthetic demo pieces, these seeds and length.
DEFAULT_SEEDS = (1, 2, 3)
DEFAULT_PIECE_SECONDS = 30.0
THRESHOLD_RANGE = (1e-4, 0.99)


# Fewer windows of sound than this set no thresholds (a 2-s clip gave one window, and all 50
# thresholds from it); an hour or so of music is what the rule is meant for.
MIN_CALIBRATION_WINDOWS = 8


@dataclasses.dataclass(frozen=True)
class ThresholdRule:
    budgets: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)  # mean active tags/window
    relative_floor: float = 0.3  # of the median window's top smoothed score
    min_share: float = 0.005  # of windows on which a tag is active
    max_share: float = 0.5
    min_active: int = 1
    max_active: int = 6

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass(frozen=True)
class Calibration:
    thresholds: np.ndarray  # one per tag
    budget: float  # the B chosen
    windows: int
    share_in_range: float  # of the windows with min_active..max_active tags at or over
    mean_active: float
    empty_share: float  # of windows with no tag over its threshold

    def record(self, rule: ThresholdRule, audio: str) -> dict:
        """What the model file's ``options.calibration`` keeps of it."""
        return {"rule": "streamtag.catalog.calibration (docs/models.md, Thresholds)",
                "parameters": rule.to_dict(), "audio": audio, "windows": self.windows,
                "budget": self.budget,
                f"share_{rule.min_active}_to_{rule.max_active}_active":
                    round(self.share_in_range, 4),
                "mean_active": round(self.mean_active, 3),
                "share_empty": round(self.empty_share, 4)}


@dataclasses.dataclass(frozen=True)
class Track:
    """One recording's windows as the daemon scores them."""

    raw: np.ndarray  # (windows, tags) model probabilities
    smoothed: np.ndarray  # (windows, tags) after the smoother's moving average
    times_s: np.ndarray  # (windows,) audio time of each window's end


def active_counts(track: Track, thresholds: np.ndarray,
                  smoothing: SmoothingConfig | None = None) -> np.ndarray:
    """Active tags per window under ``thresholds``: the daemon's smoother, hysteresis and
    minimum durations included."""
    smoother = Smoother([str(i) for i in range(len(thresholds))], thresholds, smoothing)
    counts = np.empty(len(track.raw), dtype=np.int64)
    for i, (scores, time_s) in enumerate(zip(track.raw, track.times_s, strict=True)):
        smoother.update(scores, float(time_s))
        counts[i] = int(smoother.active.sum())
    return counts


def choose_thresholds(tracks: Sequence[Track], rule: ThresholdRule | None = None,
                      smoothing: SmoothingConfig | None = None) -> Calibration:
    """Thresholds for the scored ``tracks`` by the module's rule; the active counts that pick
    the budget come from the daemon's smoother run over each track."""
    rule = rule or ThresholdRule()
    tracks = [t for t in tracks if len(t.raw)]
    if not tracks:
        raise ModelError("calibration needs at least one window of audio; give longer "
                         "recordings (a window is a few seconds)")
    scores = np.concatenate([t.smoothed for t in tracks]).astype(np.float64)
    if not np.isfinite(scores).all():
        raise ModelError("calibration got non-finite scores; the model or the audio is broken")
    means = scores.mean(axis=0)
    weights = means / max(means.sum(), 1e-12)
    floor = rule.relative_floor * float(np.median(scores.max(axis=1)))
    best: Calibration | None = None
    for budget in rule.budgets:
        shares = np.clip(budget * weights, rule.min_share, rule.max_share)
        quantiles = np.array([np.quantile(scores[:, t], 1.0 - shares[t])
                              for t in range(scores.shape[1])])
        thresholds = np.clip(np.maximum(quantiles, floor), *THRESHOLD_RANGE)
        active = np.concatenate([active_counts(t, thresholds, smoothing) for t in tracks])
        in_range = float(np.mean((active >= rule.min_active) & (active <= rule.max_active)))
        candidate = Calibration(thresholds, float(budget), len(scores), in_range,
                                float(active.mean()), float(np.mean(active == 0)))
        if best is None or candidate.share_in_range > best.share_in_range:
            best = candidate
    return best


_default_tracks: dict[str, list[Track]] = {}  # weights hash -> its tracks of DEFAULT_SEEDS


class _Windows(EngineSink):
    """Engine sink keeping each stream's window scores and times."""

    def __init__(self, silence_dbfs: float | None = None) -> None:
        self.windows: dict[str, list[tuple[np.ndarray, np.ndarray, float]]] = {}
        self.silence_dbfs = silence_dbfs  # set: quiet and silent windows are left out
        self.quiet = 0
        self.lock = threading.Lock()

    def on_window(self, result: WindowResult) -> None:
        with self.lock:
            if result.quiet:  # only with silence_dbfs: the engine then measures it
                self.quiet += 1
                return
            self.windows.setdefault(result.stream_id, []).append(
                (result.raw, result.smoothed, result.end_s))

    def on_stream_end(self, stream_id: str, events: list[TagEvent], end_s: float) -> None:
        pass


def score_tracks(model: InferenceModel, audio: Iterable[Iterable[np.ndarray]],
                 smoothing: SmoothingConfig | None = None,
                 sink: _Windows | None = None) -> list[Track]:
    """Each piece of ``audio`` (an iterable of mono float32 chunks at the model's rate) run
    through the daemon's engine: its window scores, smoothed scores and times. With a sink
    that leaves quiet windows out, the engine measures silence as the daemon does."""
    sink = sink or _Windows()
    health = HealthConfig() if sink.silence_dbfs is not None else None
    engine = Engine(model, sink, EngineConfig(), smoothing, health=health)
    ids = []
    for i, chunks in enumerate(audio):
        ids.append(f"c{i}")
        engine.add_stream(ids[-1])
        for chunk in chunks:
            engine.accept(ids[-1], chunk)
        engine.finish_stream(ids[-1])
        engine.drain()
    tracks = []
    for stream_id in ids:
        rows = sink.windows.get(stream_id, [])
        width = len(model.tags)  # a piece of silence alone keeps no window
        tracks.append(Track(np.array([r[0] for r in rows]).reshape(len(rows), width),
                            np.array([r[1] for r in rows]).reshape(len(rows), width),
                            np.array([r[2] for r in rows], dtype=np.float64)))
    return tracks


def file_chunks(path: Path, sample_rate: float) -> Iterable[np.ndarray]:
    """A recording's audio as the daemon's file source decodes it: mono chunks at
    ``sample_rate``; ``SourceError`` naming the file where it cannot be read."""
    with FileSource(path) as source:
        source.open(sample_rate)
        for chunk in source.chunks(threading.Event()):
            yield chunk.samples


def _synthetic_pieces(sample_rate: float) -> Iterable[list[np.ndarray]]:
    from streamtag.audio.synthetic import demo_piece

    for seed in DEFAULT_SEEDS:
        audio, _ = demo_piece(DEFAULT_PIECE_SECONDS, seed=seed, sample_rate=int(sample_rate))
        yield [audio]


def default_calibration(path: str | os.PathLike, rule: ThresholdRule | None = None) -> dict:
    """The default thresholds of an installed model: the rule on streamtag's synthetic music
    (``demo_piece`` seeds 1-3, 30 s each). Returns ``{"thresholds": [...], "record": {...}}``.
    The scores depend only on the weights: a process installing the same weights again (from
    another source) reuses them."""
    rule = rule or ThresholdRule()
    model = InferenceModel.load(path, device="cpu")
    tracks = _default_tracks.get(model.hash)
    if tracks is None:
        tracks = score_tracks(model, _synthetic_pieces(model.sample_rate))
        _default_tracks[model.hash] = tracks
    result = choose_thresholds(tracks, rule)
    audio = (f"synthetic music: streamtag.audio.synthetic.demo_piece seeds "
             f"{', '.join(map(str, DEFAULT_SEEDS))}, {DEFAULT_PIECE_SECONDS:g} s each (the "
             "default; run `streamtag models calibrate` on your own recordings)")
    return {"thresholds": result.thresholds.tolist(), "record": result.record(rule, audio)}


REAL_MUSIC_THRESHOLDS = Path(__file__).with_name("real_music_thresholds.json")


def real_music_calibration(path: str | os.PathLike) -> dict | None:
    """The thresholds fitted on real music for model file ``path``'s weights (its name, tags
    and checkpoint hashes as stored), as ``{"thresholds", "record"}``; None for other weights."""
    manifest = read_manifest(path)
    entry = json.loads(REAL_MUSIC_THRESHOLDS.read_text(encoding="utf-8")).get(manifest.name)
    recipe = manifest.recipe if isinstance(manifest.recipe, dict) else {}
    if (entry is None or entry["tags"] != list(manifest.tags)
            or entry["checkpoint_sha256"] != recipe.get("checkpoint_sha256")):
        return None
    return {"thresholds": [float(t) for t in entry["thresholds"]],
            "record": {**entry["record"], "check": entry["check"]}}


def trained_calibration(path: str | os.PathLike) -> dict | None:
    """The thresholds streamtag's trainer chose on the model's validation split (a file
    ``train.export`` wrote: its options name the ``threshold_method``), as
    ``{"thresholds", "record"}``; None for converted weights."""
    manifest = read_manifest(path)
    method = manifest.options.get("threshold_method")
    if not method or not manifest.thresholds:
        return None
    return {"thresholds": [float(t) for t in manifest.thresholds],
            "record": {"rule": f"{method} on the training run's validation split",
                       "audio": "the recipe's validation split (manifest.recipe)"}}


def install_calibration(path: str | os.PathLike) -> dict:
    """An installed model's default thresholds: fitted on real music where streamtag has them
    for these weights, those its training chose for a model streamtag trained
    (``trained_calibration``), else the rule on synthetic music (``default_calibration``)."""
    return (real_music_calibration(path) or trained_calibration(path)
            or default_calibration(path))


def write_calibration(path: str | os.PathLike, out: str | os.PathLike,
                      thresholds: Sequence[float], record: dict) -> Manifest:
    """Writes model file ``path`` to ``out`` (atomically; it may be ``path``) with
    ``thresholds`` and the calibration's ``record`` in the manifest's options
    (``options.calibration``)."""
    manifest = read_manifest(path)
    return stored.rewrite(path, out, thresholds=tuple(thresholds),
                             options={**manifest.options, "calibration": record})


def calibrate_file(model_path: str | os.PathLike, audio_paths: Sequence[str | os.PathLike],
                   rule: ThresholdRule | None = None,
                   device: str = "cpu") -> tuple[Calibration, Manifest]:
    """Sets the thresholds of model file ``model_path`` (in place, atomically) by the rule on
    the recordings ``audio_paths``. A file that cannot be decoded is an error naming it, and the
    model file is left as it was."""
    rule = rule or ThresholdRule()
    if not audio_paths:
        raise ModelError("calibration needs at least one recording")
    model = InferenceModel.load(model_path, device=device)
    pieces = (file_chunks(Path(path), model.sample_rate) for path in audio_paths)
    sink = _Windows(silence_dbfs=HealthConfig().silence_dbfs)  # no thresholds from dead air
    try:
        tracks = score_tracks(model, pieces, sink=sink)
    except SourceError as error:  # names the file
        raise ModelError(f"cannot calibrate {model_path}: {error}; the model file is "
                         "unchanged") from None
    heard = sum(len(t.times_s) for t in tracks)
    if heard < MIN_CALIBRATION_WINDOWS:
        raise ModelError(
            f"cannot calibrate {model_path} on {heard} window(s) of sound"
            + (f" ({sink.quiet} quiet or silent, below {sink.silence_dbfs:g} dBFS, left out)"
               if sink.quiet else "")
            + f": it needs at least {MIN_CALIBRATION_WINDOWS}, and an hour or so of the music "
            "you will tag sets them well; give longer recordings. The model file is unchanged")
    result = choose_thresholds(tracks, rule)
    names = ", ".join(Path(p).name for p in audio_paths[:5])
    more = f" and {len(audio_paths) - 5} more" if len(audio_paths) > 5 else ""
    record = result.record(rule, f"{len(audio_paths)} recording(s): {names}{more}")
    return result, write_calibration(model_path, model_path, result.thresholds, record)
