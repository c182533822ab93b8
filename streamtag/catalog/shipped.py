"""The model shipped inside the package: what every command serves when no model is named."""

from __future__ import annotations

from pathlib import Path

from streamtag.errors import ModelError

__all__ = ["default_model_path"]


def default_model_path() -> Path:
    """The model shipped with streamtag (models/default/model.pt in the source tree)."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "models" / "default" / "model.pt",
                      package.parent / "models" / "default" / "model.pt"):
        if candidate.is_file():
            return candidate
    raise ModelError("no --model given and the default model is not installed "
                     "(models/default/model.pt); pass --model PATH")
