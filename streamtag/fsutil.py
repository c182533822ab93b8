"""Files written whole or not at all, the one atomic write of the project; and folders and files
that are ours alone.

A file is written under its own name in a hidden folder beside it (``.NAME.XXXXXXXX.tmp``), then
renamed onto the target (``os.replace``, atomic on one file system): a reader or a crash never
sees half a file, and an interrupted write leaves only the hidden folder, which
``remove_stale_temporaries`` clears. The temporary file keeps the target's name because some
writers depend on it: the audio writer picks the format by the suffix, and TorchScript names the
folder inside its archive after the file.

streamtag's own folders and the secrets and code kept in them (the control token, installed
models) must be this user's alone, as ssh wants ``~/.ssh``: a folder is made 0700 and refused
when another user owns it (root aside, as for ssh: a store baked into an image) or group or
others may write it (``own_folder``); a file is opened without following a link
(``O_NOFOLLOW``) and checked on the opened descriptor, so what is checked is what is read
(``read_own_file``, ``check_own_file``). Each refusal is a
``NotOursError`` naming the path and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["TEMPORARY_GLOB", "NotOursError", "atomic_path", "check_own_file", "own_folder",
           "read_own_file", "remove_stale_temporaries", "write_json_atomic", "write_text_atomic"]

TEMPORARY_GLOB = ".*.tmp"  # what atomic_path leaves behind when its process dies mid-write


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
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


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """``path`` holds ``text`` (UTF-8), written atomically (``atomic_path``)."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike[str], data: Any, *, allow_nan: bool = False) -> None:
    """``path`` holds ``data`` as indented JSON, written atomically; NaN and infinities are
    refused unless ``allow_nan`` (they are not JSON)."""
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=allow_nan) + "\n")


def remove_stale_temporaries(folder: str | os.PathLike[str], older_than_s: float = 3600.0) -> None:
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


class NotOursError(PermissionError):
    """A folder or file of streamtag's that is not this user's alone, or a link where the file
    itself belongs; the message names the path and the fix."""


def _checked(status: os.stat_result, path: Path, what: str, private: bool) -> None:
    """Refuses ``status`` (of ``path``) unless this user owns it (or root, as ssh allows, but
    not for a ``private`` file: a secret is its user's) and group and others may not write it
    (nor read it, when ``private``)."""
    me = os.geteuid()
    if status.st_uid != me and (private or status.st_uid != 0):
        raise NotOursError(
            f"{what} {path} belongs to another user (uid {status.st_uid}, not {me}): whoever "
            "owns it could read or replace what streamtag keeps there; remove it, or choose "
            "a place of your own (for streamtag's folder, set $STREAMTAG_HOME)")
    mode = stat.S_IMODE(status.st_mode)
    if mode & (0o077 if private else 0o022):
        fix = "chmod 600" if private and stat.S_ISREG(status.st_mode) else "chmod go-w"
        if stat.S_ISDIR(status.st_mode):
            fix = "chmod 700"
        harm = "read the secret" if private else "replace what streamtag keeps there"
        raise NotOursError(f"{what} {path} is open to group or others (mode {mode:04o}), who "
                           f"could {harm}; run `{fix} {path}` and try again")


def own_folder(path: str | os.PathLike[str], *, create: bool = True,
               what: str = "streamtag's folder") -> Path:
    """``path``, made with mode 0700 (and its missing parents) when missing and ``create``;
    NotOursError when another user owns it, group or others may write it, or it is not a
    folder. A link the user made to a folder of theirs is followed: the folder is checked."""
    path = Path(path).expanduser()
    if create:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = path.stat()
    if not stat.S_ISDIR(status.st_mode):
        raise NotOursError(f"{what} {path} is not a folder; remove it or choose another place")
    _checked(status, path, what, private=False)
    return path


def _open_own(path: Path, what: str, private: bool) -> int:
    """A descriptor of the regular file ``path`` itself (never a link's target), checked on
    the descriptor: this user's, not writable (``private``: nor readable) by others."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # a fifo must not block
    try:
        descriptor = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotOursError(f"{what} {path} is a symbolic link: streamtag opens its own "
                               "files only as themselves, never through a link (which could "
                               "lead anywhere); put the file itself there") from None
        raise
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise NotOursError(f"{what} {path} is not a regular file; remove it")
        _checked(status, path, what, private)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def read_own_file(path: str | os.PathLike[str], limit: int, *, private: bool = True,
                  what: str = "the file") -> bytes:
    """The bytes of ``path``, opened without following a link and checked on the descriptor
    (``_open_own``); NotOursError, or OSError when it cannot be read; ValueError past
    ``limit`` bytes (checked before more is read)."""
    path = Path(path).expanduser()
    descriptor = _open_own(path, what, private)
    with os.fdopen(descriptor, "rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{what} {path} is over {limit} bytes; it is not one streamtag wrote")
    return data


def check_own_file(path: str | os.PathLike[str], *, what: str = "the file") -> Path:
    """``path``, once its opened descriptor shows a regular file of this user's that group and
    others may not write (``_open_own``); NotOursError otherwise. For files loaded by path
    afterwards: in a folder checked by ``own_folder``, no one else can replace it meanwhile."""
    path = Path(path).expanduser()
    os.close(_open_own(path, what, private=False))
    return path
