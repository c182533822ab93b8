"""The project's one atomic write: whole files or none, the target's own name while writing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from streamtag.fsutil import atomic_path, remove_stale_temporaries, write_text_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    write_text_atomic(target, "old\n")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as temporary:
        temporary.write_text("half", encoding="utf-8")
        raise RuntimeError("disk full")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_the_temporary_file_has_the_target_s_name_and_replaces_it(tmp_path: Path) -> None:
    target = tmp_path / "clip_00001.flac"
    target.write_bytes(b"old")
    with atomic_path(target) as temporary:
        # Writers that pick the format by the suffix, or record the name, see the real one.
        assert temporary.name == target.name and temporary.parent.parent == tmp_path
        assert temporary.parent.name.startswith(".clip_00001.flac.")
        temporary.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # readers see the old file until the rename
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip_00001.flac"]


def test_only_stale_temporaries_are_removed(tmp_path: Path) -> None:
    old_folder = tmp_path / ".a.npy.x1y2.tmp"
    old_folder.mkdir()
    (old_folder / "a.npy").write_bytes(b"half")
    old_file = tmp_path / ".b.npy.123.tmp"  # what an earlier streamtag left
    old_file.write_bytes(b"half")
    young = tmp_path / ".c.npy.z9.tmp"
    young.mkdir()
    hour_ago = time.time() - 7200
    for path in (old_folder, old_file):
        os.utime(path, (hour_ago, hour_ago))
    remove_stale_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [young.name]
