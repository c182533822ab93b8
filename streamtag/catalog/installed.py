"""Installed models: model files under ``$STREAMTAG_HOME/models/``, found by name.

``streamtag models install musicnn-msd`` converts one of musicnn's published taggers into
``models/musicnn-msd.pt`` (docs/models.md); every command that takes a model file then takes
the name too, through ``resolve_model``. The folder is ``$STREAMTAG_HOME/models`` when that
variable is set, else ``models`` in the user data folder (platformdirs: e.g.
``~/.local/share/streamtag`` on Linux).

A model file is code, so the store is this user's alone: the folder and streamtag's folder above
it are made 0700 and refused when another user owns them or others may write them, and a model
is taken by name only when it is a file of this user's that others may not write, never a link
(``fsutil``); a model another user planted there is refused, not loaded.

An install never leaves a half-made file: each model is converted and calibrated in a
scratch folder, then written into the store atomically (``fsutil.atomic_path``); a failure
leaves the folder as it was. What ``--from`` gives is untrusted: a wheel is checked before a
byte of it is unpacked (its size, its members' sizes and count, no member outside the folder),
and the files a conversion reads may not exceed ``MAX_SOURCE_BYTES`` together.
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from streamtag import places
from streamtag.errors import ModelError
from streamtag.fsutil import NotOursError, check_own_file, own_folder
from streamtag.model.manifest import Manifest, read_manifest

HOME_ENV = places.HOME_ENV
SUFFIX = ".pt"
PACKAGE = "musicnn"
PACKAGE_REQUIREMENT = "musicnn==0.1.0"  # the release whose checkpoints the converter knows
# Caps on what an install reads or unpacks: musicnn's wheel is 29 MB of 40-odd files, its
# unpacked package 36 MB.
MAX_SOURCE_BYTES = 1024**3  # a wheel, everything it unpacks to, one member, or what is read
MAX_ARCHIVE_MEMBERS = 10_000

__all__ = ["HOME_ENV", "available_names", "home", "info", "install", "installed",
           "models_folder", "own_models_folder", "path_of", "remove", "resolve_model"]

# The shipped model's name where a model is named: `status`, `demo` and `info` call it so
SHIPPED = "default"


def home() -> Path:
    """``$STREAMTAG_HOME``, else streamtag's folder in the user data folder (streamtag.places)."""
    return places.home()


def models_folder() -> Path:
    return home() / "models"


def own_models_folder(create: bool = False) -> Path | None:
    """The store's folder, checked with streamtag's folder above it (``fsutil.own_folder``),
    made 0700 with ``create``; None when it does not exist (and not ``create``). ModelError
    naming the folder and the fix when either is another user's or open to others."""
    folder = models_folder()
    if not create and not folder.is_dir():
        return None
    try:
        own_folder(home(), create=create, what=f"streamtag's folder (${HOME_ENV})")
        return own_folder(folder, create=create, what="the model store")
    except NotOursError as exc:
        raise ModelError(str(exc)) from None


def _own_model(name: str, path: Path) -> Path:
    """``path``, the file of installed model ``name``, when it is this user's and others may
    not write it and it is not a link; ModelError saying so otherwise."""
    try:
        return check_own_file(path, what=f"the file of installed model {name!r},")
    except NotOursError as exc:
        raise ModelError(f"{exc} (a model file is code: it is loaded only from a file of "
                         "your own)") from None


# what ``install`` converts: ``music``, the recommended real-music tagger
# (``streamtag.catalog.music``), and musicnn's four taggers (``streamtag.catalog.musicnn.NAMES``;
# both need torch, so the names are here too, for listing them without it)
RECOMMENDED = "music"
AVAILABLE = (RECOMMENDED, "musicnn-mtt", "musicnn-msd", "vgg-mtt", "vgg-msd")
# what each name is made of: the musicnn taggers whose checkpoints it reads
MADE_OF = {RECOMMENDED: ("musicnn-msd", "musicnn-mtt")}


def available_names() -> tuple[str, ...]:
    """The names ``install`` knows (``music`` and musicnn's four taggers); listed without
    torch."""
    return AVAILABLE


def checkpoints_of(name: str) -> tuple[str, ...]:
    """The musicnn taggers whose checkpoints installing ``name`` reads."""
    return MADE_OF.get(name, (name,))


def installed() -> dict[str, Path]:
    """Installed models by name, sorted; temporary files of an install in progress are not."""
    folder = own_models_folder()
    if folder is None:
        return {}
    return {p.stem: p for p in sorted(folder.glob(f"*{SUFFIX}"))
            if p.is_file() and not p.name.startswith(".")}


def _unknown_name(name: str) -> ModelError:
    names = installed()
    listed = ", ".join(names) if names else "none"
    known = sorted(set(names) | set(AVAILABLE))
    # the names are lower case with hyphens: compare the name so written first
    close = difflib.get_close_matches(name.lower().replace("_", "-"), known, n=1, cutoff=0.6)
    if close and close[0] in names:
        fix = f"did you mean {close[0]!r}? (installed)"
    elif close or name in AVAILABLE:
        target = close[0] if close else name
        fix = (("did you mean " + repr(target) + "? " if target != name else "")
               + f"install it with `streamtag models install {target}`")
    else:
        fix = (f"give an installed model's name, the path of a model file, {SHIPPED!r} (the "
               f"model shipped with streamtag), or one of {', '.join(AVAILABLE)} after "
               "`streamtag models install NAME`")
    return ModelError(f"no model named {name!r} is installed (installed: {listed}; folder "
                      f"{models_folder()}); {fix}")


def _looks_like_path(spec: str) -> bool:
    return (os.sep in spec or (os.altsep is not None and os.altsep in spec)
            or spec.endswith(SUFFIX) or spec.startswith("."))


def resolve_model(spec: str | os.PathLike | None) -> str | None:
    """The model file a ``--model`` value (or ``[model] path``, ``model.init``, a
    ``reload_model`` request) means: an existing file, a path, an installed model's name, or
    ``default``: the model shipped with streamtag, as ``status`` and ``demo`` name it.
    ``None`` stays ``None`` (the caller's default). A bare word that is neither an existing file
    nor an installed name raises ``ModelError`` listing the installed models and how to
    install."""
    if spec is None:
        return None
    text = os.fspath(spec)
    if Path(text).exists() or _looks_like_path(text):
        return text
    if text == SHIPPED and SHIPPED not in installed():
        from streamtag.catalog.shipped import default_model_path

        return str(default_model_path())
    return str(path_of(text))


def path_of(name: str) -> Path:
    """The file of installed model ``name``; ModelError when it is not installed, or when the
    file is not this user's alone (``_own_model``)."""
    path = installed().get(name)
    if path is None:
        raise _unknown_name(name)
    return _own_model(name, path)


def remove(name: str) -> Path:
    path = installed().get(name)
    if path is None:  # _unknown_name's advice (install it) is not what remove wants
        listed = ", ".join(installed()) or "none"
        raise ModelError(f"no model named {name!r} is installed, so nothing was removed "
                         f"(installed: {listed}; folder {models_folder()})")
    path.unlink()
    return path


def model_file(spec: str) -> Path:
    """The file an installed model's name or a model file's path names; ModelError when it
    names neither."""
    path = Path(resolve_model(spec))
    if not path.is_file():
        raise ModelError(f"{spec}: no such model file; give an installed model's name "
                         "(streamtag models list) or a model file's path")
    return path


def info(name: str) -> tuple[Path, Manifest]:
    path = model_file(name)
    return path, read_manifest(path)


# -- where the weights come from ----------------------------------------------------------------

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
        from streamtag.catalog.musicnn import find_installed_package

        installed_package = find_installed_package()
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
    from streamtag.catalog.musicnn import checkpoint_files

    files = {package / "configuration.py"}
    for name in names:
        for member in checkpoints_of(name):
            files.update(checkpoint_files(package, member))
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


def download_package(scratch: Path, log: Callable[[str], None]) -> Path:
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


def install(names: Sequence[str], source: str | os.PathLike | None = None,
            log: Callable[[str], None] | None = None) -> list[tuple[str, Path]]:
    """Converts each of ``names`` into ``models/NAME.pt``; returns (name, path) pairs.

    Weights come from ``source`` (``--from``), else the installed musicnn package, else a pip
    download. Each model is converted, checked and given its default thresholds in a temporary
    folder, then moved into the store in one step: an error (ModelError naming the file and
    tensor) leaves the store as it was for that model and the ones after it.
    """
    from streamtag.catalog import musicnn as musicnn_models

    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    known = available_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ModelError(f"unknown model name(s) {unknown}; streamtag can install "
                         f"{', '.join(known)}")
    if not names:
        raise ModelError(f"name the model(s) to install: {', '.join(known)}")
    done = []
    with tempfile.TemporaryDirectory(prefix="streamtag-install-") as folder:
        scratch = Path(folder)
        only = None
        if source is not None:
            package, only = package_from(Path(source), scratch)
        else:
            package = musicnn_models.find_installed_package()
            if package is None:
                package = download_package(scratch, log)
            else:
                log(f"streamtag models: converting the checkpoints of the installed musicnn "
                    f"package ({package})")
        if only is not None and set(names) != {only}:
            raise ModelError(f"--from {source} is the checkpoint of {only} only; install "
                             f"{only} from it, or give the whole package or wheel for "
                             f"{', '.join(n for n in names if n != only)}")
        try:
            check_source_size(package, names)
            for name in names:
                converted = scratch / f"{name}{SUFFIX}"
                if name == RECOMMENDED:
                    from streamtag.catalog import music

                    music.convert(package, converted)
                else:
                    musicnn_models.convert(package, name, converted)
                _install_converted(name, converted, done, log)
        except ModelError as exc:  # its paths as the user gave them, not the scratch copy's
            raise ModelError(_as_given(str(exc), scratch, source, only)) from None
    return done


def _install_converted(name: str, converted: Path, done: list, log) -> None:
    """Moves a converted and checked model into the store with its default thresholds."""
    from streamtag.catalog.calibration import install_calibration, write_calibration

    calibration = install_calibration(converted)  # the documented default
    target = own_models_folder(create=True) / f"{name}{SUFFIX}"
    write_calibration(converted, target, calibration["thresholds"], calibration["record"])
    done.append((name, target))
    log(f"streamtag models: installed {name} -> {target}")


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

