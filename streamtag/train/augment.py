"""Training-time augmentations of a batch: random gain, SpecAugment masks, mixup; and padding of
short tracks to a window.

Each function takes its randomness from a ``numpy.random.Generator`` that the loop seeds and
checkpoints, so a resumed run draws what an uninterrupted one would. Batches are torch tensors:
log-mel ``(batch, n_mels, frames)`` or waveform ``(batch, samples)``, on any device.

The gain is applied in the frontend's own log domain: a gain of g dB scales the amplitude by
a = 10^(g/20) and each mel energy (a power-``power`` spectrum) by s = a^power, so

- ``db``: y' = y + db_multiplier · log10(s), not below the floor db_multiplier · log10(amin);
- ``ln``: y' = y + ln(s), not below ln(amin);
- ``log1p``: y = log10(1 + G·m) gives y' = log10(1 + s·(10^y − 1));
- ``none``: y' = s · y;

which is what the frontend computes for the scaled audio (frames at the floor — silence — stay
there).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from streamtag.frontend import LogMelOptions
from streamtag.train.recipe import AugmentConfig

__all__ = [
    "Augmenter",
    "apply_gain",
    "mixup",
    "pad_to",
    "silence_value",
    "spec_augment",
]


def silence_value(options: LogMelOptions) -> float:
    """The frontend's output for a silent frame: what a window is padded with."""
    if options.log == "db":
        return options.db_multiplier * math.log10(options.amin)
    if options.log == "ln":
        return math.log(options.amin)
    return 0.0  # log1p of 0 and no compression


def pad_to(frames: np.ndarray, length: int, wrap: bool, fill: float) -> np.ndarray:
    """``frames`` (time first) made ``length`` long at least: repeated from its start when
    ``wrap`` (a short track loops), else padded at the end with ``fill``."""
    missing = length - frames.shape[0]
    if missing <= 0:
        return frames
    if wrap and frames.shape[0] > 0:
        repeats = -(-length // frames.shape[0])
        return np.concatenate([frames] * repeats, axis=0)[:length]
    pad = [(0, missing)] + [(0, 0)] * (frames.ndim - 1)
    return np.pad(frames, pad, mode="constant", constant_values=fill)


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, rng: np.random.Generator,
          use_max: bool = False) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """Mixup (Zhang et al. 2018): example i becomes λ_i·x_i + (1 − λ_i)·x_p(i), its targets
    likewise, with λ_i ~ Beta(α, α) and p a random permutation of the batch. ``use_max`` takes
    max(λ, 1 − λ). Returns the mixed inputs and targets, λ and p."""
    batch = x.shape[0]
    lam = rng.beta(alpha, alpha, size=batch)
    if use_max:
        lam = np.maximum(lam, 1.0 - lam)
    perm = rng.permutation(batch)
    index = torch.as_tensor(perm, device=x.device)
    lam_x = torch.as_tensor(lam, dtype=x.dtype, device=x.device).view(-1, *[1] * (x.ndim - 1))
    lam_y = torch.as_tensor(lam, dtype=y.dtype, device=y.device).view(-1, *[1] * (y.ndim - 1))
    return (lam_x * x + (1 - lam_x) * x[index], lam_y * y + (1 - lam_y) * y[index], lam, perm)


def _band_mask(rng: np.random.Generator, batch: int, count: int, width: int,
               size: int) -> np.ndarray:
    """(batch, size) bool: ``count`` bands per example, each of a width drawn from [0, width]."""
    widths = rng.integers(0, min(width, size) + 1, size=(batch, count))
    starts = rng.integers(0, size - widths + 1)
    positions = np.arange(size)[None, None, :]
    inside = (positions >= starts[..., None]) & (positions < (starts + widths)[..., None])
    return inside.any(axis=1)


def spec_augment(x: torch.Tensor, rng: np.random.Generator, freq_masks: int, freq_width: int,
                 time_masks: int, time_width: int) -> torch.Tensor:
    """SpecAugment's frequency and time masking (Park et al. 2019) on ``(batch, n_mels,
    frames)``: each example gets ``freq_masks`` bands of 0..``freq_width`` mels and
    ``time_masks`` spans of 0..``time_width`` frames, drawn uniformly, set to the example's
    mean (the log-mel features are not normalised to zero mean)."""
    batch, n_mels, frames = x.shape
    mask = np.zeros((batch, n_mels, frames), dtype=bool)
    if freq_masks:
        mask |= _band_mask(rng, batch, freq_masks, freq_width, n_mels)[:, :, None]
    if time_masks:
        mask |= _band_mask(rng, batch, time_masks, time_width, frames)[:, None, :]
    fill = x.mean(dim=(1, 2), keepdim=True)
    return torch.where(torch.as_tensor(mask, device=x.device), fill, x)


def apply_gain(x: torch.Tensor, gain_db: torch.Tensor | np.ndarray | float,
               options: LogMelOptions | None) -> torch.Tensor:
    """``x`` as the frontend gives it for the audio scaled by ``gain_db`` (per example):
    waveforms (``options=None``) are multiplied, log-mel features transformed in their log
    domain (module docstring)."""
    gain = torch.as_tensor(gain_db, dtype=torch.float64, device=x.device)
    gain = gain.reshape(-1, *[1] * (x.ndim - 1)) if gain.ndim else gain
    if options is None:
        return (x.double() * 10.0 ** (gain / 20.0)).to(x.dtype)
    log10_s = gain * (options.power / 20.0)  # log10 of the factor s on each mel energy
    y = x.double()
    if options.log == "db":
        floor = options.db_multiplier * math.log10(options.amin)
        shifted = torch.clamp(y + options.db_multiplier * log10_s, min=floor)
        out = torch.where(y <= floor, y, shifted)
    elif options.log == "ln":
        floor = math.log(options.amin)
        shifted = torch.clamp(y + log10_s * math.log(10.0), min=floor)
        out = torch.where(y <= floor, y, shifted)
    elif options.log == "log1p":
        out = torch.log10(1.0 + 10.0 ** log10_s * torch.expm1(y * math.log(10.0)))
    elif options.log == "none":
        out = y * 10.0 ** log10_s
    else:  # LogMelOptions validates log; a new form must be added here
        raise ValueError(f"no gain rule for log compression {options.log!r}")
    return out.to(x.dtype)


@dataclasses.dataclass
class Augmenter:
    """The recipe's ``[augment]`` as one call on a training batch: gain, then SpecAugment, then
    mixup, each only when switched on. ``options`` is None for waveform models."""

    config: AugmentConfig
    options: LogMelOptions | None
    rng: np.random.Generator

    @property
    def active(self) -> bool:
        c = self.config
        return bool(c.gain_db or c.specaugment or c.mixup_alpha)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, features: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The augmented batch; ``features`` (a track feature vector per example, or None)
        are mixed with the same λ and partners as the inputs."""
        c = self.config
        if c.gain_db:
            x = apply_gain(x, self.rng.uniform(-c.gain_db, c.gain_db, size=x.shape[0]),
                           self.options)
        if c.specaugment and self.options is not None:
            x = spec_augment(x, self.rng, c.freq_masks, c.freq_width, c.time_masks,
                             c.time_width)
        if c.mixup_alpha:
            x, y, lam, perm = mixup(x, y, c.mixup_alpha, self.rng, c.mixup_max)
            if features is not None:
                weight = torch.as_tensor(lam, dtype=features.dtype,
                                         device=features.device).view(-1, 1)
                index = torch.as_tensor(perm, device=features.device)
                features = weight * features + (1 - weight) * features[index]
        return x, y, features
