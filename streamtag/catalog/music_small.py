"""``music-small``: the student of ``music`` that streamtag ships, installed by name.

It is trained by streamtag's trainer (``models/music-small.toml``: a zoo network learning
``music``'s 92 scores on real audio from Debian packages; docs/models.md has its card), so
there is nothing to convert: ``streamtag models install music-small`` copies the shipped file
(or, with ``--from``, the ``model.pt`` a run of the recipe wrote) into the model store, where
every command finds it by name. Its thresholds are the
ones training chose to agree with the teacher's tags, which the store keeps
(``calibration.install_calibration``).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from streamtag.catalog.importer import Installer, Log
from streamtag.errors import ModelError

__all__ = ["IMPORTER", "NAME", "shipped_path"]

NAME = "music-small"


def shipped_path() -> Path:
    """The shipped file (models/music-small/model.pt in the source tree)."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "models" / NAME / "model.pt",
                      package.parent / "models" / NAME / "model.pt"):
        if candidate.is_file():
            return candidate
    raise ModelError(f"{NAME} is not shipped with this installation (models/{NAME}/model.pt); "
                     f"train it (docs/training.md, \"Distil a real-music model\") and install "
                     f"the run's file: streamtag models install {NAME} --from RUN/model.pt")


class _Shipped:
    names = (NAME,)

    def convert_all(self, names: Sequence[str], source: str | Path | None, scratch: Path,
                    log: Log, install: Installer) -> None:
        from streamtag.model.manifest import read_manifest

        path = Path(source) if source is not None else shipped_path()
        if not path.is_file():
            raise ModelError(f"--from {source}: no such file; give the model.pt that "
                             f"`streamtag train models/{NAME}.toml` wrote")
        if read_manifest(path).name != NAME:
            raise ModelError(f"--from {source}: not a {NAME} model file (its manifest names "
                             f"{read_manifest(path).name!r}); train models/{NAME}.toml")
        target = scratch / f"{NAME}.pt"
        shutil.copyfile(path, target)
        log(f"streamtag models: {NAME} from {path} ({path.stat().st_size / 1e6:.1f} MB); "
            "copying it into the model store")
        install(NAME, target)


IMPORTER = _Shipped()
