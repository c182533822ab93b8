"""The pre-trained encoder file, ``vqvae.pt``: what ``streamtag pretrain`` writes and a
``vqvae_gru`` / ``vqvae_cnn`` tagger starts from (``model.encoder``).

The file is ``torch.save`` of a dict: ``format`` ("streamtag-vqvae"), ``version``,
``architecture`` ("vqvae"), the VQ-VAE ``state_dict`` and ``options``, the ``frontend`` options,
the input ``scaling``, ``window``, ``hop``, the kept ``epoch``, its validation ``metrics``, those
``before`` training and the ``recipe``. ``write_pretrained_encoder`` writes it (atomically),
``read_pretrained_encoder`` reads and checks it against a tagger's recipe,
``load_pretrained_encoder`` puts its encoder into a tagger.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from streamtag.errors import ConfigError
from streamtag.frontend import LogMelOptions
from streamtag.train.recipe import Recipe
from streamtag.train.runtime import save_atomic

__all__ = [
    "ENCODER_OPTIONS",
    "FILE_FORMAT",
    "FILE_VERSION",
    "PRETRAINED_FILE",
    "SCALING_OPTIONS",
    "load_pretrained_encoder",
    "read_pretrained_encoder",
    "write_pretrained_encoder",
]

FILE_FORMAT = "streamtag-vqvae"
FILE_VERSION = 1
PRETRAINED_FILE = "vqvae.pt"
# What a tagger's encoder must share with the pre-trained one.
ENCODER_OPTIONS = ("vq_type", "channels", "n_codes", "n_mels")
SCALING_OPTIONS = ("input_offset", "input_scale")


def write_pretrained_encoder(path: Path, model: nn.Module, options: Mapping[str, Any],
                             frontend: LogMelOptions, scaling: Mapping[str, Any], recipe: Recipe,
                             epoch: int, metrics: Mapping[str, Any],
                             before: Mapping[str, Any]) -> None:
    """Writes the VQ-VAE ``model`` (built with ``options``) as ``path``, atomically."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_atomic({"format": FILE_FORMAT, "version": FILE_VERSION, "architecture": "vqvae",
                 "state_dict": state, "options": options, "frontend": frontend.to_dict(),
                 "scaling": scaling, "window": recipe.model.window, "hop": recipe.model.hop,
                 "epoch": epoch, "metrics": metrics, "before": before,
                 "recipe": recipe.to_dict()}, path)


def read_pretrained_encoder(path: str | os.PathLike, recipe: Recipe) -> dict[str, Any]:
    """The contents of ``vqvae.pt`` (``pretrain``), checked against a ``vqvae_gru`` /
    ``vqvae_cnn`` recipe: ``vq_type``, ``channels``, ``n_codes``, ``n_mels``, every frontend
    option, and ``input_offset`` / ``input_scale`` when the recipe sets them must be the file's.
    A missing file, another kind of file or a mismatch is a ``ConfigError`` naming the file and
    what differs. The trainer calls it before featurising, so a wrong file fails at once."""
    from streamtag import nets

    path = Path(path).expanduser()
    where = f"model.encoder {path}"
    if not path.is_file():
        raise ConfigError(f"{where} not found; pre-train one with `streamtag pretrain "
                          "RECIPE.toml`, which writes RUN_DIR/vqvae.pt")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch's own messages talk about weights_only, not the user
        raise ConfigError(f"{where} is not a pre-trained VQ-VAE file (the vqvae.pt of "
                          f"`streamtag pretrain`): torch cannot read it "
                          f"({type(error).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FILE_FORMAT:
        raise ConfigError(f"{where} is not a pre-trained VQ-VAE file (the vqvae.pt of "
                          "`streamtag pretrain`): it has no 'format': 'streamtag-vqvae' entry")
    if payload.get("version") != FILE_VERSION:
        raise ConfigError(f"{where} has version {payload.get('version')}; this streamtag reads "
                          f"version {FILE_VERSION}")
    arch = recipe.model.architecture
    theirs = payload["options"]
    ours = {**nets.spec(arch)["options"], **recipe.model.options}
    mismatches = [f"model.options.{key} is {ours[key]!r} here, {theirs.get(key)!r} in the file"
                  for key in ENCODER_OPTIONS if ours[key] != theirs.get(key)]
    mismatches += [f"model.options.{key} is {ours[key]!r} here, {theirs.get(key)!r} in the file "
                   "(leave it out to take the file's)"
                   for key in SCALING_OPTIONS
                   if key in recipe.model.options and ours[key] != theirs.get(key)]
    frontend, stored = recipe.frontend_options().to_dict(), payload.get("frontend", {})
    mismatches += [f"frontend.{key} is {frontend.get(key)!r} here, {stored.get(key)!r} in the "
                   "file" for key in sorted(set(frontend) | set(stored))
                   if frontend.get(key) != stored.get(key)]
    if mismatches:
        raise ConfigError(f"{where} does not fit this recipe: " + "; ".join(mismatches))
    return payload


def load_pretrained_encoder(model: nn.Module, path: str | os.PathLike, recipe: Recipe, *,
                            log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Loads the encoder, codebook and input scaling of ``vqvae.pt`` (``pretrain``) into a
    ``vqvae_gru`` / ``vqvae_cnn`` ``model`` built from ``recipe``, after the checks of
    ``read_pretrained_encoder``; returns the file's contents. The freeze is the tagger's own
    ``freeze_encoder`` option."""
    payload = read_pretrained_encoder(path, recipe)
    path = Path(path).expanduser()
    where = f"model.encoder {path}"
    arch = recipe.model.architecture
    theirs = payload["options"]
    if not hasattr(model, "load_encoder_state_dict"):
        raise ConfigError(f"{arch} has no VQ-VAE encoder to load {path} into")
    try:
        model.load_encoder_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError) as error:
        raise ConfigError(f"{where}: its weights do not fit {arch}: "
                          f"{str(error).splitlines()[0]}") from None
    if log is not None:
        frozen = getattr(model, "freeze_encoder", False)
        log(f"encoder: {path} (epoch {payload.get('epoch')}, validation MSE "
            f"{payload['metrics']['mse']:.5f}), {'frozen' if frozen else 'trained further'}; "
            f"input scaling offset {theirs['input_offset']:.4g}, scale "
            f"{theirs['input_scale']:.4g}")
    return payload
