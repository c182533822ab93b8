"""What ``streamtag models install`` asks of an importer: one family of published weights
that it fetches and converts into model files.

An importer is one module holding one object with the ``names`` it installs and
``convert_all``; ``streamtag.catalog.installed.IMPORTERS`` lists them, and the store does the
rest (the names it knows, a scratch folder, calibration, the atomic move into the store).
What an importer reads from ``--from`` is untrusted and held to the caps below.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

__all__ = ["MAX_ARCHIVE_MEMBERS", "MAX_SOURCE_BYTES", "Importer", "Installer", "Log"]

# Caps on what an install reads or unpacks: musicnn's wheel is 29 MB of 40-odd files, its
# unpacked package 36 MB.
MAX_SOURCE_BYTES = 1024**3  # a wheel, everything it unpacks to, one member, or what is read
MAX_ARCHIVE_MEMBERS = 10_000

Log = Callable[[str], None]
# Takes one converted model file (name, path in the scratch folder) into the store.
Installer = Callable[[str, Path], None]


class Importer(Protocol):
    names: tuple[str, ...]  # what it installs, in the order `streamtag models list` shows them

    def convert_all(self, names: Sequence[str], source: str | Path | None, scratch: Path,
                    log: Log, install: Installer) -> None:
        """Fetches the weights (from ``source``, the user's ``--from``, when given), converts
        each of ``names`` into a model file under ``scratch`` and hands it to ``install``, in
        order. ModelError says what is wrong and how to fix it, with paths as the user gave
        them."""
        ...
