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
   ``max_active`` active tags (1 to 6).

Installed models carry the thresholds this rule gives on streamtag's synthetic music (a fixed,
documented set of pieces); ``streamtag models calibrate NAME AUDIO...`` replaces them with the
thresholds the same rule gives on the user's own recordings.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from streamtag import modelfile
from streamtag.engine import Engine, EngineConfig, WindowResult
from streamtag.errors import ModelError, SourceError
from streamtag.inference import InferenceModel
from streamtag.smoothing import SmoothingConfig, TagEvent
from streamtag.sources import FileSource

# The default thresholds' audio: streamtag's synthetic demo pieces, these seeds and length.
DEFAULT_SEEDS = (1, 2, 3)
DEFAULT_PIECE_SECONDS = 30.0
THRESHOLD_RANGE = (1e-4, 0.99)


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
        return {"rule": "streamtag.calibration (docs/models.md, Thresholds)",
                "parameters": rule.to_dict(), "audio": audio, "windows": self.windows,
                "budget": self.budget, "share_1_to_6_active": round(self.share_in_range, 4),
                "mean_active": round(self.mean_active, 3),
                "share_empty": round(self.empty_share, 4)}


def choose_thresholds(scores: np.ndarray, rule: ThresholdRule | None = None) -> Calibration:
    """Thresholds for smoothed window scores ``(windows, tags)`` by the module's rule."""
    rule = rule or ThresholdRule()
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ModelError(f"calibration needs scores of at least one window, got shape "
                         f"{scores.shape}; give longer recordings (a window is a few seconds)")
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
        active = (scores >= thresholds).sum(axis=1)
        in_range = float(np.mean((active >= rule.min_active) & (active <= rule.max_active)))
        candidate = Calibration(thresholds, float(budget), len(scores), in_range,
                                float(active.mean()), float(np.mean(active == 0)))
        if best is None or candidate.share_in_range > best.share_in_range:
            best = candidate
    return best


_default_scores: dict[str, np.ndarray] = {}  # weights hash -> smoothed scores on DEFAULT_SEEDS


class _Scores:
    """Engine sink keeping each window's smoothed scores."""

    def __init__(self) -> None:
        self.smoothed: list[np.ndarray] = []
        self.lock = threading.Lock()

    def on_window(self, result: WindowResult) -> None:
        with self.lock:
            self.smoothed.append(result.smoothed)

    def on_stream_end(self, stream_id: str, events: list[TagEvent], end_s: float) -> None:
        pass


def smoothed_scores(model: InferenceModel, audio: Iterable[Iterable[np.ndarray]],
                    smoothing: SmoothingConfig | None = None) -> np.ndarray:
    """Smoothed window scores ``(windows, tags)`` of each piece of ``audio`` (each an iterable
    of mono float32 chunks at the model's rate), run through the daemon's engine."""
    sink = _Scores()
    engine = Engine(model, sink, EngineConfig(max_batch=32), smoothing)
    for i, chunks in enumerate(audio):
        engine.add_stream(f"c{i}")
        for chunk in chunks:
            engine.accept(f"c{i}", chunk)
        engine.finish_stream(f"c{i}")
        engine.drain()
    if not sink.smoothed:
        return np.zeros((0, len(model.tags)))
    return np.stack(sink.smoothed)


def _file_chunks(path: Path, sample_rate: float) -> Iterable[np.ndarray]:
    source = FileSource(path)
    source.open(sample_rate)
    for chunk in source.chunks(threading.Event()):
        yield chunk.samples


def _synthetic_pieces(sample_rate: float) -> Iterable[list[np.ndarray]]:
    from streamtag.train.synthetic import demo_piece  # a generator of audio, not the trainer

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
    scores = _default_scores.get(model.hash)
    if scores is None:
        scores = smoothed_scores(model, _synthetic_pieces(model.sample_rate))
        _default_scores[model.hash] = scores
    result = choose_thresholds(scores, rule)
    audio = (f"synthetic music: streamtag.train.synthetic.demo_piece seeds "
             f"{', '.join(map(str, DEFAULT_SEEDS))}, {DEFAULT_PIECE_SECONDS:g} s each (the "
             "default; run `streamtag models calibrate` on your own recordings)")
    return {"thresholds": result.thresholds.tolist(), "record": result.record(rule, audio),
            "calibration": result}


def calibrate_file(model_path: str | os.PathLike, audio_paths: Sequence[str | os.PathLike],
                   rule: ThresholdRule | None = None,
                   device: str = "cpu") -> tuple[Calibration, modelfile.Manifest]:
    """Sets the thresholds of model file ``model_path`` (in place, atomically) by the rule on
    the recordings ``audio_paths``. A file that cannot be decoded is an error naming it, and the
    model file is left as it was."""
    rule = rule or ThresholdRule()
    if not audio_paths:
        raise ModelError("calibration needs at least one recording")
    model = InferenceModel.load(model_path, device=device)
    pieces = (_file_chunks(Path(path), model.sample_rate) for path in audio_paths)
    try:
        scores = smoothed_scores(model, pieces)
    except SourceError as error:  # names the file
        raise ModelError(f"cannot calibrate {model_path}: {error}; the model file is "
                         "unchanged") from None
    result = choose_thresholds(scores, rule)
    names = ", ".join(Path(p).name for p in audio_paths[:5])
    more = f" and {len(audio_paths) - 5} more" if len(audio_paths) > 5 else ""
    record = result.record(rule, f"{len(audio_paths)} recording(s): {names}{more}")
    manifest = modelfile.read_manifest(model_path)
    written = modelfile.rewrite(model_path, model_path, thresholds=tuple(result.thresholds),
                                options={**manifest.options, "calibration": record})
    return result, written
