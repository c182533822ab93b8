"""musicnn's importer: its four published taggers and ``music``, made of two of them, from
the musicnn package (``--from`` its wheel, its package folder or one checkpoint folder; else
the installed package; else a pip download of it).

Each name is converted in the scratch folder the store gives (``streamtag.catalog.installed``):
with torch by ``streamtag.catalog.musicnn`` (``music``: ``streamtag.catalog.music``), without
it straight to the ONNX graph (``streamtag.catalog.onnx_build``). A wheel is checked before a
byte of it is unpacked (its size, its members' sizes and count, no member outside the folder),
and the files a conversion reads may not exceed ``MAX_SOURCE_BYTES`` together.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

from streamtag.catalog.importer import MAX_ARCHIVE_MEMBERS, MAX_SOURCE_BYTES, Installer, Log
from streamtag.errors import ModelError
from streamtag.model.stored import COMPLETE_COMMAND, torch_installed

__all__ = ["IMPORTER", "MusicnnImporter", "checkpoints_of", "package_from"]

PACKAGE = "musicnn"
PACKAGE_REQUIREMENT = "musicnn==0.1.0"  # the release whose checkpoints the converter knows
# ``music`` (streamtag.catalog.music), the recommended real-music tagger, and musicnn's four
# taggers (``streamtag.catalog.musicnn.NAMES``)
MUSIC = "music"
NAMES = (MUSIC, "musicnn-mtt", "musicnn-msd", "vgg-mtt", "vgg-msd")
# what each name is made of: the musicnn taggers whose checkpoints it reads
MADE_OF = {MUSIC: ("musicnn-msd", "musicnn-mtt")}


def checkpoints_of(name: str) -> tuple[str, ...]:
    """The musicnn taggers whose checkpoints installing ``name`` reads."""
    return MADE_OF.get(name, (name,))


def _is_package(folder: Path) -> bool:
    return (folder / "configuration.py").is_file() and any(
        (folder / d).is_dir() for d in ("MTT_musicnn", "MSD_musicnn", "MTT_vgg", "MSD_vgg"))


def _is_checkpoint(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("*.index"))


def _name_of_checkpoint(folder: Path) -> str | None:
    """``MSD_musicnn`` -> ``musicnn-msd``: musicnn's folder names, data set then model."""
    match = re.fullmatch(r"(MTT|MSD)_(musicnn|vgg)", folder.name)
    return f"{match.group(2)}-{match.group(1).lower()}" if match else None


def package_from(source: Path, scratch: Path) -> tuple[Path, str | None]:
    """The musicnn package folder that ``--from SOURCE`` holds, and the one model name when
    SOURCE is a single checkpoint folder. A wheel is unpacked into ``scratch``."""
    source = Path(source).expanduser()
    if not source.exists():
        raise ModelError(f"--from {source}: no such file or folder; give musicnn's wheel "
                         "(musicnn-0.1.0-py3-none-any.whl), its unpacked package folder or "
                         "one checkpoint folder such as MSD_musicnn")
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise ModelError(f"--from {source}: not a wheel (a wheel is a zip archive); give "
                             "musicnn's .whl file, its package folder or a checkpoint folder")
        target = scratch / "wheel"
        try:
            with zipfile.ZipFile(source) as wheel:
                _check_archive(source, wheel)
                wheel.extractall(target)
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise ModelError(f"--from {source}: the wheel cannot be unpacked ({error}); "
                             "download it again") from None
        source = target
    for candidate in (source, source / PACKAGE):
        if _is_package(candidate):
            return candidate, None
    if _is_checkpoint(source):
        name = _name_of_checkpoint(source)
        if _is_package(source.parent) and name is not None:
            return source.parent, name
        if name is None:
            raise ModelError(f"--from {source}: a checkpoint folder must keep musicnn's name "
                             "(MTT_musicnn, MSD_musicnn, MTT_vgg or MSD_vgg) so streamtag "
                             "knows which model it holds")
        # A lone checkpoint folder: its tag names are in musicnn's configuration.py, taken
        # from the installed package beside it in a package folder of its own.
        from streamtag.catalog import musicnn

        installed_package = musicnn.find_installed_package()
        if installed_package is None:
            raise ModelError(f"--from {source}: a lone checkpoint folder lacks the tag names, "
                             "which are in musicnn's configuration.py; give the whole package "
                             "folder or the wheel, or install musicnn (pip install --no-deps "
                             f"{PACKAGE_REQUIREMENT}) for its configuration.py")
        package = scratch / "package"
        package.mkdir(parents=True, exist_ok=True)
        (package / "configuration.py").symlink_to(installed_package / "configuration.py")
        (package / source.name).symlink_to(source.resolve(), target_is_directory=True)
        return package, name
    raise ModelError(f"--from {source}: holds no musicnn package (configuration.py and the "
                     "MTT_/MSD_ checkpoint folders), no musicnn/ folder and no checkpoint "
                     "(*.index); give musicnn's wheel, its package folder or a checkpoint folder")


def _gib(size: int) -> str:
    return f"{size / 1024**3:.3g} GiB"


def _check_archive(source: Path, wheel: zipfile.ZipFile) -> None:
    """Refuses, before anything is unpacked, a wheel over the caps or with a member that
    would land outside the folder it is unpacked into. The sizes checked are the ones zipfile
    holds each member to while unpacking."""
    cap = f"the cap of {_gib(MAX_SOURCE_BYTES)} (streamtag.catalog.installed.MAX_SOURCE_BYTES)"
    size = source.stat().st_size
    if size > MAX_SOURCE_BYTES:
        raise ModelError(f"--from {source}: the file is {_gib(size)}, over {cap}; musicnn's "
                         "wheel is 29 MB")
    members = wheel.infolist()
    if len(members) > MAX_ARCHIVE_MEMBERS:
        raise ModelError(f"--from {source}: the wheel holds {len(members)} files, over the cap "
                         f"of {MAX_ARCHIVE_MEMBERS}; musicnn's holds about 40")
    total = 0
    for member in members:
        name = member.filename
        parts = re.split(r"[/\\]", name)
        if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) or ".." in parts:
            raise ModelError(f"--from {source}: the wheel's member {name!r} would be unpacked "
                             "outside its folder (an absolute path or ..); it is not musicnn's "
                             "wheel")
        if member.file_size > MAX_SOURCE_BYTES:
            raise ModelError(f"--from {source}: the wheel's member {name!r} unpacks to "
                             f"{_gib(member.file_size)}, over {cap}")
        total += member.file_size
    if total > MAX_SOURCE_BYTES:
        raise ModelError(f"--from {source}: the wheel unpacks to {_gib(total)}, over {cap}; "
                         "musicnn's unpacks to 36 MB")


def check_source_size(package: Path, names: Sequence[str]) -> None:
    """Refuses a package whose files that converting ``names`` reads (configuration.py and
    each checkpoint's index and data files) exceed MAX_SOURCE_BYTES together."""
    from streamtag.catalog import musicnn

    files = {package / "configuration.py"}
    for name in names:
        for member in checkpoints_of(name):
            files.update(musicnn.checkpoint_files(package, member))
    total = 0
    for path in sorted(files):
        try:
            total += path.stat().st_size
        except OSError:
            continue  # missing: the conversion names it
        if total > MAX_SOURCE_BYTES:
            raise ModelError(f"{package}: the files to convert ({', '.join(names)}) are over the "
                             f"cap of {_gib(MAX_SOURCE_BYTES)} together (streamtag.catalog."
                             f"installed.MAX_SOURCE_BYTES), reached at {path}; musicnn's "
                             "checkpoints take 36 MB")


def download_package(scratch: Path, log: Log) -> Path:
    """``pip download --no-deps musicnn==0.1.0`` into ``scratch``, pip's progress shown; the
    unpacked package folder. ModelError saying how to install from a file when it fails."""
    log(f"streamtag models: no musicnn package installed; downloading {PACKAGE_REQUIREMENT} "
        "(a 29 MB wheel from PyPI) with pip into a temporary folder")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--dest", str(scratch / "download"), PACKAGE_REQUIREMENT]
    try:
        # pip's progress goes to our stderr (fd 2): stdout stays for the command's result.
        done = subprocess.run(command, stdout=2, check=False)
    except OSError as error:
        done = None
        reason = str(error)
    if done is None or done.returncode != 0:
        reason = reason if done is None else f"pip exited with status {done.returncode}"
        raise ModelError(f"cannot download {PACKAGE_REQUIREMENT} ({reason}; offline?). On a "
                         "machine with a connection run `pip download --no-deps "
                         f"{PACKAGE_REQUIREMENT}`, copy the .whl here and run `streamtag models "
                         "install NAME --from musicnn-0.1.0-py3-none-any.whl`")
    wheels = sorted((scratch / "download").glob("*.whl"))
    if not wheels:
        raise ModelError(f"pip download of {PACKAGE_REQUIREMENT} gave no wheel; install from a "
                         "file with --from")
    package, _ = package_from(wheels[0], scratch)
    return package


class MusicnnImporter:
    names = NAMES

    def convert_all(self, names: Sequence[str], source: str | os.PathLike | None,
                    scratch: Path, log: Log, install: Installer) -> None:
        """Weights come from ``source`` (``--from``), else the installed musicnn package, else
        a pip download."""
        from streamtag.catalog import musicnn

        only = None
        if source is not None:
            package, only = package_from(Path(source), scratch)
        else:
            found = musicnn.find_installed_package()
            if found is None:
                package = download_package(scratch, log)
            else:
                package = found
                log(f"streamtag models: converting the checkpoints of the installed musicnn "
                    f"package ({package})")
        if only is not None and set(names) != {only}:
            raise ModelError(f"--from {source} is the checkpoint of {only} only; install "
                             f"{only} from it, or give the whole package or wheel for "
                             f"{', '.join(n for n in names if n != only)}")
        with_torch = torch_installed()
        try:
            check_source_size(package, names)
            for name in names:
                converted = scratch / f"{name}.pt"
                if not with_torch:
                    from streamtag.catalog import onnx_build

                    log(f"streamtag models: torch is not installed, so {name} is written as "
                        "the ONNX graph that ONNX Runtime serves on the CPU, without its "
                        f"TorchScript module (`{COMPLETE_COMMAND} {name}` adds it once torch "
                        "is installed)")
                    onnx_build.convert(package, name, converted)
                elif name == MUSIC:
                    from streamtag.catalog import music

                    music.convert(package, converted)
                else:
                    musicnn.convert(package, name, converted)
                install(name, converted)
        except ModelError as exc:  # its paths as the user gave them, not the scratch copy's
            raise ModelError(_as_given(str(exc), scratch, source, only)) from None


IMPORTER = MusicnnImporter()


def _as_given(text: str, scratch: Path, source, only: str | None) -> str:
    """An error's text with the temporary copy's paths as the user gave them: a lone
    checkpoint folder's own path, a wheel's member named in the wheel."""
    if source is None:
        return text
    given = Path(source).expanduser()
    if only is not None:  # package/NAME is a link to the folder given
        return text.replace(str(scratch / "package" / given.name), str(given))
    unpacked = f"{scratch / 'wheel'}{os.sep}"
    if unpacked in text:
        return text.replace(unpacked, "") + f" (in the wheel {given})"
    return text

