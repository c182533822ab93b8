"""The model shipped inside the package: what every command serves when no model is named."""

from __future__ import annotations

from pathlib import Path

from streamtag.errors import ModelError

__all__ = ["SYNTHETIC_NOTE", "default_model_path"]


def default_model_path() -> Path:
    """The model shipped with streamtag (models/default/model.pt in the source tree)."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "models" / "default" / "model.pt",
                      package.parent / "models" / "default" / "model.pt"):
        if candidate.is_file():
            return candidate
    raise ModelError("no --model given and the default model is not installed "
                     "(models/default/model.pt); pass --model PATH")


# said once where the shipped model tags audio a user brought (tag, run): its tags describe
# streamtag's synthetic music, and a station's genre or mood is not among them
SYNTHETIC_NOTE = ("the shipped default model knows synthetic acoustics only (fast, slow, major, "
                  "minor, loud, soft, ...), not the genres, moods or instruments of real "
                  "music; for those: streamtag models install music, then --model music")
