"""How the engine serves one loaded model, decided once when the model is loaded.

A ``ServingPlan`` answers every question the engine has of a model before the first window:
how many windows a forward pass takes, how far apart windows are, whether overlapping windows
share work, what its tags say of mood and what content classification needs. The engine reads
the plan of the model serving now and asks the model nothing more; a model swap is a new plan.

The plan lives here, above ``model/``, because three of its answers are the engine's own
(its batch rule and settings, the mood table, the content classifier).
"""

from __future__ import annotations

import dataclasses
import logging

from streamtag.engine.config import CPU_MAX_BATCH, EngineConfig
from streamtag.engine.content import ContentModel, ContentNetworks, ContentTracker
from streamtag.engine.mood import MoodPlan, MoodTable
from streamtag.engine.speech import SpeechPlan, SpeechTrack
from streamtag.model.inference import InferenceModel, cheapest_batch
from streamtag.model.window_reuse import WindowReuse

log = logging.getLogger(__name__)

__all__ = ["ContentPlan", "ServingPlan"]


@dataclasses.dataclass(frozen=True)
class ContentPlan:
    """What telling music from speech, noise and tones needs for one model's streams."""

    model: ContentModel  # the network's weights for the way speech is decided
    sample_rate: float  # the serving model's: streams arrive at its rate
    speech: SpeechPlan  # who decides speech: silero-vad where installed, else the network

    def tracker(self, sample_offset: int = 0) -> ContentTracker:
        """A stream's content frontend, from stream sample ``sample_offset`` on."""
        return ContentTracker(self.model, self.sample_rate, sample_offset,
                              speech=self.speech.detector is None)

    def speech_track(self, sample_offset: int = 0) -> SpeechTrack | None:
        """A stream's way into the speech detector (None without one)."""
        return self.speech.track(self.sample_rate, sample_offset)


@dataclasses.dataclass(frozen=True)
class ServingPlan:
    """One model as the engine serves it."""

    batch_limit: int  # windows per forward pass, at most
    hop: int  # between windows: frames for log-mel models, samples for those that read samples
    reuse: WindowReuse | None  # overlapping windows share work; None: each is computed whole
    mood: MoodPlan | None  # what its tags say of mood; None: moods are off
    content: ContentPlan | None  # None: [content] is off

    @classmethod
    def decide(cls, model: InferenceModel, config: EngineConfig, moods: MoodTable | None,
               content: ContentNetworks | None,
               speech: SpeechPlan | None = None) -> ServingPlan:
        """The plan for ``model`` under ``config``, with ``moods`` and ``content`` the tables
        of what is turned on (None: off) and ``speech`` who decides speech (None: the
        detector in the model store, where installed)."""
        hop = _hop(model, config)
        speech = speech or SpeechPlan.installed()
        return cls(
            batch_limit=_batch_limit(model, config), hop=hop, reuse=_reuse(model, config, hop),
            mood=None if moods is None else moods.plan(model.tags, model.thresholds),
            content=None if content is None else ContentPlan(
                content.network(speech.detector is not None), model.sample_rate, speech))


def _batch_limit(model: InferenceModel, config: EngineConfig) -> int:
    """``engine.max_batch``; left out, CUDA_MAX_BATCH on CUDA and on the CPU the cheapest batch
    size up to CPU_MAX_BATCH, measured on ``model`` (``cheapest_batch``): the forward per
    window grows with the batch for some models there and shrinks for others, so batching
    serves where it pays and nowhere else."""
    if config.max_batch is not None or model.device.type != "cpu":
        return config.batch_limit(model.device.type)
    measured = bool(model.batch_ms)
    limit = cheapest_batch(model.batch_ms or model.measure_batches(CPU_MAX_BATCH))
    if not measured:
        log.info("%s on %s: forward ms per window by batch size %s; serving at up to %d",
                 model.name, model.backend,
                 ", ".join(f"{b}: {ms:.3g}" for b, ms in model.batch_ms.items()), limit)
    return limit


def _hop(model: InferenceModel, config: EngineConfig) -> int:
    """``engine.hop_seconds`` in the model's input units, or the model file's hop."""
    if config.hop_seconds is None:
        return model.hop
    unit = model.frontend.hop_length if model.input_kind == "logmel" else 1
    return max(1, round(config.hop_seconds * model.sample_rate / unit))


def _reuse(model: InferenceModel, config: EngineConfig, hop: int) -> WindowReuse | None:
    """The window reuse that serves ``model`` at ``hop`` (``streamtag.model.window_reuse``),
    None where the config turns it off or the model has none."""
    if not config.reuse_windows:
        return None
    reuse, why = model.window_reuse(hop)
    if reuse is None:
        log.debug("%s: windows are computed whole: %s", model.name, why)
    return reuse
