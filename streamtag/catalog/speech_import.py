"""silero-vad's speech detector into the model store: ``streamtag models install speech``, which
``install music`` runs too (the content decision's speech, streamtag.engine.speech).

The graph is in silero-vad's wheel, whose requirements pull torch, which serving never needs:
so the wheel is fetched as musicnn's is, ``pip download --no-deps`` (or given with ``--from``:
the wheel, or the graph file itself), and only its ONNX graph is taken out, checked against the
SHA-256 streamtag knows (``KNOWN_GRAPHS``) and written into the store with a record of where it
came from and its licence (MIT). The wheel is read within caps before a byte is unpacked.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from streamtag.catalog.importer import MAX_ARCHIVE_MEMBERS, MAX_SOURCE_BYTES, Log
from streamtag.engine.speech import (
    KNOWN_GRAPHS,
    MAX_GRAPH_BYTES,
    SPEECH_FILE,
    WITHOUT_DETECTOR,
    SpeechPlan,
    read_record,
    speech_path,
    write_record,
)
from streamtag.errors import ModelError
from streamtag.fsutil import atomic_path

__all__ = ["PACKAGE_REQUIREMENT", "SPEECH", "install", "status"]

SPEECH = "speech"
PACKAGE_REQUIREMENT = "silero-vad==6.2.3"  # the release whose graph KNOWN_GRAPHS holds
GRAPH_MEMBER = "silero_vad/data/silero_vad.onnx"
LICENCE_MEMBER = re.compile(r"silero_vad-[^/]+\.dist-info/(licenses/)?LICENSE")
HOMEPAGE = "https://github.com/snakers4/silero-vad"
MAX_LICENCE_BYTES = 64 * 1024


def status() -> tuple[bool, str]:
    """Whether the detector is installed and loads, and a line saying what it is or what
    follows from its absence."""
    path = speech_path()
    if not path.is_file():
        return False, (f"not installed: {WITHOUT_DETECTOR}; `streamtag models install "
                       "speech` installs silero-vad's detector")
    plan = SpeechPlan.installed()
    if plan.detector is None:
        return False, plan.note
    record = read_record() or {}
    return True, (f"{plan.detector.described}, {record.get('licence', 'MIT')} licence, "
                  f"at {path}")


def install(source: str | os.PathLike[str] | None, log: Log, folder: Path) -> Path:
    """The graph from ``source`` (a silero-vad wheel or the graph file), else from a pip
    download of the wheel, into the store's ``folder`` (checked by the store,
    streamtag.catalog.installed); its path. ModelError says what is wrong and how to install
    from a file."""
    with tempfile.TemporaryDirectory(prefix="streamtag-speech-") as scratch:
        if source is None:
            wheel = _download(Path(scratch), log)
            origin = f"{PACKAGE_REQUIREMENT} from PyPI (pip download --no-deps)"
        else:
            wheel = Path(source).expanduser()
            origin = f"{wheel.name} (--from)"
            if not wheel.is_file():
                raise ModelError(f"--from {wheel}: no such file; give silero-vad's wheel "
                                 f"(`pip download --no-deps {PACKAGE_REQUIREMENT}`) or its "
                                 f"{Path(GRAPH_MEMBER).name}")
        graph, licence = _graph_of(wheel)
    digest = hashlib.sha256(graph).hexdigest()
    described = KNOWN_GRAPHS.get(digest)
    if described is None:
        raise ModelError(f"{wheel}: its graph's sha256 {digest} is not the one of "
                         f"{PACKAGE_REQUIREMENT} that streamtag knows; give that release's "
                         "wheel")
    target = folder / SPEECH_FILE
    with atomic_path(target) as temporary:
        temporary.write_bytes(graph)
        temporary.chmod(0o600)
    write_record({"name": SPEECH, "graph": described, "sha256": digest, "source": origin,
                  "homepage": HOMEPAGE, "licence": "MIT", "licence_text": licence,
                  "installed": datetime.datetime.now(datetime.UTC).isoformat(
                      timespec="seconds")})
    log(f"streamtag models: installed {SPEECH} ({described}, MIT) -> {target}")
    return target


def _graph_of(source: Path) -> tuple[bytes, str | None]:
    """The graph's bytes and the licence's text from a wheel, or the bytes of a graph file."""
    size = source.stat().st_size
    if size > MAX_SOURCE_BYTES:
        raise ModelError(f"--from {source}: {size} bytes, over the cap of {MAX_SOURCE_BYTES} "
                         "(streamtag.catalog.importer.MAX_SOURCE_BYTES); silero-vad's wheel is "
                         "11 MB")
    if not zipfile.is_zipfile(source):
        if size > MAX_GRAPH_BYTES:
            raise ModelError(f"--from {source}: neither a wheel nor a graph of silero-vad's "
                             f"size (at most {MAX_GRAPH_BYTES} bytes)")
        return source.read_bytes(), None
    try:
        with zipfile.ZipFile(source) as wheel:
            members = wheel.infolist()
            if len(members) > MAX_ARCHIVE_MEMBERS:
                raise ModelError(f"--from {source}: {len(members)} files, over the cap of "
                                 f"{MAX_ARCHIVE_MEMBERS}; silero-vad's wheel holds 18")
            by_name = {m.filename: m for m in members}
            graph = by_name.get(GRAPH_MEMBER)
            if graph is None:
                raise ModelError(f"--from {source}: no {GRAPH_MEMBER} in it; give silero-vad's "
                                 f"wheel ({PACKAGE_REQUIREMENT})")
            if graph.file_size > MAX_GRAPH_BYTES:
                raise ModelError(f"--from {source}: {GRAPH_MEMBER} unpacks to "
                                 f"{graph.file_size} bytes, over {MAX_GRAPH_BYTES}")
            licence = next((m for m in members if LICENCE_MEMBER.fullmatch(m.filename)
                            and m.file_size <= MAX_LICENCE_BYTES), None)
            text = (None if licence is None
                    else wheel.read(licence).decode("utf-8", errors="replace"))
            return wheel.read(graph), text
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ModelError(f"--from {source}: the wheel cannot be read ({error}); download it "
                         "again") from None


def _download(scratch: Path, log: Log) -> Path:
    """``pip download --no-deps silero-vad==6.2.3`` into ``scratch``: the wheel. Its torch
    requirement is not followed: only the ONNX graph is taken from it."""
    log(f"streamtag models: downloading {PACKAGE_REQUIREMENT} (an 11 MB wheel from PyPI, "
        "without its torch requirement) with pip into a temporary folder")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--dest", str(scratch / "download"), PACKAGE_REQUIREMENT]
    reason = ""
    try:
        # pip's progress goes to our stderr (fd 2): stdout stays for the command's result.
        done = subprocess.run(command, stdout=2, check=False)
    except OSError as error:
        done, reason = None, str(error)
    if done is None or done.returncode != 0:
        reason = reason if done is None else f"pip exited with status {done.returncode}"
        raise ModelError(f"cannot download {PACKAGE_REQUIREMENT} ({reason}; offline?). On a "
                         f"machine with a connection run `pip download --no-deps "
                         f"{PACKAGE_REQUIREMENT}`, copy the .whl here and run `streamtag models "
                         "install speech --from silero_vad-6.2.3-py3-none-any.whl`")
    wheels = sorted((scratch / "download").glob("*.whl"))
    if not wheels:
        raise ModelError(f"pip download of {PACKAGE_REQUIREMENT} gave no wheel; install from a "
                         "file with --from")
    return wheels[0]
