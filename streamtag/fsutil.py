"""Files written whole or not at all: the one atomic write of the project.

A file is written under its own name in a hidden folder beside it (``.NAME.XXXXXXXX.tmp``), then
renamed onto the target (``os.replace``, atomic on one file system): a reader or a crash never
sees half a file, and an interrupted write leaves only the hidden folder, which
``remove_stale_temporaries`` clears. The temporary file keeps the target's name because some
writers depend on it: the audio writer picks the format by the suffix, and TorchScript names the
folder inside its archive after the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["TEMPORARY_GLOB", "atomic_path", "remove_stale_temporaries", "write_json_atomic",
           "write_text_atomic"]

TEMPORARY_GLOB = ".*.tmp"  # what atomic_path leaves behind when its process dies mid-write


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write ``path``'s new contents to; moved onto ``path`` when the block
    ends without an error, removed either way."""
    path = Path(path)
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        temporary = folder / path.name
        yield temporary
        os.replace(temporary, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """``path`` holds ``text`` (UTF-8), written atomically (``atomic_path``)."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, data: Any, *, allow_nan: bool = False) -> None:
    """``path`` holds ``data`` as indented JSON, written atomically; NaN and infinities are
    refused unless ``allow_nan`` (they are not JSON)."""
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=allow_nan) + "\n")


def remove_stale_temporaries(folder: str | os.PathLike, older_than_s: float = 3600.0) -> None:
    """Removes what interrupted writes left in ``folder`` more than ``older_than_s`` ago (a
    younger one may belong to a writer still at work)."""
    now = time.time()
    for temporary in Path(folder).glob(TEMPORARY_GLOB):
        try:
            if now - temporary.stat().st_mtime <= older_than_s:
                continue
            if temporary.is_dir():
                shutil.rmtree(temporary)
            else:  # a file of an earlier streamtag, which wrote ``.NAME.PID.tmp`` files
                temporary.unlink()
        except OSError:
            pass
