"""Installed models: model files under ``$STREAMTAG_HOME/models/``, found by name.

``streamtag models install musicnn-msd`` converts one of musicnn's published taggers into
``models/musicnn-msd.pt`` (docs/models.md) through the importer that knows the name
(``IMPORTERS``: a family of published weights is one module holding an ``Importer``,
``streamtag.catalog.importer``; musicnn's is ``streamtag.catalog.musicnn_import``). Every
command that takes a model file then takes the name too, through ``resolve_model``. The folder
is ``$STREAMTAG_HOME/models`` when that variable is set, else ``models`` in the user data
folder (platformdirs: e.g. ``~/.local/share/streamtag`` on Linux).

A model installed without torch is written without its TorchScript module, which
``streamtag models complete NAME`` adds once torch is installed.

``speech`` is no tagger: it is silero-vad's speech detector, which the content decision uses
(streamtag.catalog.speech_import, streamtag.engine.speech). Installing ``music`` installs it
too where it is not installed yet, so that the recommended install gives the whole daemon.

A model file is code, so the store is this user's alone: the folder and streamtag's folder above
it are made 0700 and refused when another user owns them or others may write them, and a model
is taken by name only when it is a file of this user's that others may not write, never a link
(``fsutil``); a model another user planted there is refused, not loaded.

An install never leaves a half-made file: each model is converted and calibrated in a
scratch folder, then written into the store atomically (``fsutil.atomic_path``); a failure
leaves the folder as it was. What ``--from`` gives is untrusted: the importer reads it within
the caps of ``streamtag.catalog.importer`` (``MAX_SOURCE_BYTES``, ``MAX_ARCHIVE_MEMBERS``).
"""

from __future__ import annotations

import difflib
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from streamtag import places
from streamtag.catalog import music_small, musicnn_import, speech_import
from streamtag.catalog.importer import MAX_ARCHIVE_MEMBERS, MAX_SOURCE_BYTES, Importer
from streamtag.errors import ModelError
from streamtag.fsutil import NotOursError, check_own_file, own_folder
from streamtag.model.manifest import Manifest, read_manifest
from streamtag.model.stored import COMPLETE_COMMAND, needs_torch, torch_installed

HOME_ENV = places.HOME_ENV
SUFFIX = ".pt"

__all__ = ["HOME_ENV", "IMPORTERS", "MAX_ARCHIVE_MEMBERS", "MAX_SOURCE_BYTES",
           "available_names", "complete", "home", "info", "install", "installed",
           "models_folder", "own_models_folder", "path_of", "remove", "resolve_model"]

# The importers ``install`` knows, in the order ``streamtag models list`` shows their names.
IMPORTERS: tuple[Importer, ...] = (musicnn_import.IMPORTER, music_small.IMPORTER)

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


# the real-music tagger ``streamtag models list`` recommends (``streamtag.catalog.music``)
RECOMMENDED = musicnn_import.MUSIC
# the speech detector, installed by its own name and with RECOMMENDED
SPEECH = speech_import.SPEECH


def available_names() -> tuple[str, ...]:
    """The names ``install`` knows, each importer's in turn; listed without torch."""
    return tuple(name for importer in IMPORTERS for name in importer.names)


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
    available = available_names()
    known = sorted(set(names) | set(available))
    # the names are lower case with hyphens: compare the name so written first
    close = difflib.get_close_matches(name.lower().replace("_", "-"), known, n=1, cutoff=0.6)
    if close and close[0] in names:
        fix = f"did you mean {close[0]!r}? (installed)"
    elif close or name in available:
        target = close[0] if close else name
        fix = (("did you mean " + repr(target) + "? " if target != name else "")
               + f"install it with `streamtag models install {target}`")
    else:
        fix = (f"give an installed model's name, the path of a model file, {SHIPPED!r} (the "
               f"model shipped with streamtag), or one of {', '.join(available)} after "
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


def install(names: Sequence[str], source: str | os.PathLike | None = None,
            log: Callable[[str], None] | None = None) -> list[tuple[str, Path]]:
    """Converts each of ``names`` into ``models/NAME.pt``; returns (name, path) pairs.

    The importer that knows a name (``IMPORTERS``) fetches its weights (from ``source``,
    ``--from``, when given) and converts it in a temporary folder; each model is checked and
    given its default thresholds there, then moved into the store in one step: an error
    (ModelError naming the file and tensor) leaves the store as it was for that model and the
    ones after it. ``speech`` (silero-vad's detector) is installed from ``source`` when it is
    the only name; with ``music`` it comes along (downloaded) where it is not installed, and
    a failure to fetch it then is said, not raised: the tagger is installed all the same.
    """
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    known = (*available_names(), SPEECH)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ModelError(f"unknown model name(s) {unknown}; streamtag can install "
                         f"{', '.join(known)}")
    if not names:
        raise ModelError(f"name the model(s) to install: {', '.join(known)}")
    done: list[tuple[str, Path]] = []

    def take(name: str, converted: Path) -> None:
        _install_converted(name, converted, done, log)

    for importer in IMPORTERS:
        mine = [n for n in names if n in importer.names]
        if mine:
            with tempfile.TemporaryDirectory(prefix="streamtag-install-") as folder:
                importer.convert_all(mine, source, Path(folder), log, take)
    if SPEECH in names:
        done.append((SPEECH, speech_import.install(source if list(names) == [SPEECH] else None,
                                                   log, _store())))
    elif RECOMMENDED in names and not speech_import.status()[0]:
        try:
            done.append((SPEECH, speech_import.install(None, log, _store())))
        except ModelError as error:
            log(f"streamtag models: {RECOMMENDED} is installed, but silero-vad's speech "
                f"detector is not ({error}); until it is, the content network decides speech")
    return done


def _store() -> Path:
    """The store's folder, made where it is not (``own_models_folder``)."""
    folder = own_models_folder(create=True)
    assert folder is not None  # made with create
    return folder


def complete(name: str) -> tuple[Path, Manifest]:
    """Adds the TorchScript module to installed model ``name`` (or the model file it names)
    that was installed without torch (``modelfile.add_module``; in place, atomically). Needs
    torch; ModelError where the file has its module already."""
    path = model_file(name)
    if not torch_installed():
        raise needs_torch(f"adding the TorchScript module to {path} ({COMPLETE_COMMAND})")
    from streamtag.model import modelfile

    return path, modelfile.add_module(path)


def _install_converted(name: str, converted: Path, done: list, log) -> None:
    """Moves a converted and checked model into the store with its default thresholds."""
    from streamtag.catalog.calibration import install_calibration, write_calibration

    calibration = install_calibration(converted)  # the documented default
    target = own_models_folder(create=True) / f"{name}{SUFFIX}"
    write_calibration(converted, target, calibration["thresholds"], calibration["record"])
    done.append((name, target))
    log(f"streamtag models: installed {name} -> {target}")
