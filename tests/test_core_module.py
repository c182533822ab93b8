"""The extension module as a whole: ``streamtag._core`` is put together from one binding file per
header (csrc/python/), so a binding left out of core_module.cc, or bound after a signature that
names its class, shows only here and not in any single file."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from streamtag import _core

PACKAGE = Path(__file__).resolve().parent.parent / "streamtag"


def names_the_package_takes() -> set[str]:
    """``X`` and ``X.y`` for every ``from streamtag._core import X`` and ``_core.X.y`` in the
    package's modules."""
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "streamtag._core":
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module == "streamtag":
                aliases.update(a.asname or a.name for a in node.names if a.name == "_core")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases):
                names.add(node.attr)
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                    and isinstance(node.value.value, ast.Name) and node.value.value.id in aliases):
                names.add(f"{node.value.attr}.{node.attr}")
    return names


def test_every_name_the_package_takes_from_the_extension_is_bound():
    names = names_the_package_takes()
    # the parse found frontend.py's, loudness.py's and protocol.py's uses
    assert {"OnlineLogMel", "LoudnessMeter", "rounded_json_array",
            "LogMelOptions.preset_names"} <= names, names
    missing = []
    for name in sorted(names):
        owner = _core
        for part in name.split("."):
            owner = getattr(owner, part, None)
        if owner is None:
            missing.append(name)
    assert not missing, f"streamtag._core lacks {missing}: is its Bind call in core_module.cc?"


def documented_callables():
    """(where, docstring) of every function, method and property getter the module binds."""
    for name, obj in vars(_core).items():
        if callable(obj) and not inspect.isclass(obj):
            yield name, obj.__doc__ or ""
        if inspect.isclass(obj) and obj.__module__ == "streamtag._core":
            for attr, member in vars(obj).items():
                if isinstance(member, property):
                    yield f"{name}.{attr}", member.fget.__doc__ or ""
                elif callable(member) and not attr.startswith("_pybind11"):
                    yield f"{name}.{attr}", getattr(member, "__doc__", "") or ""


def test_no_signature_of_the_extension_shows_a_cpp_type_name():
    docs = dict(documented_callables())
    assert "OnlineLogMel.window_level" in docs and "window_level_of" in docs, sorted(docs)
    leaked = {where: doc for where, doc in docs.items() if "::" in doc}
    assert not leaked, (
        f"signatures name C++ types (a class bound after a signature that uses it; order the "
        f"Bind calls in csrc/python/core_module.cc): {leaked}")
    assert "-> streamtag._core.WindowLevel" in docs["OnlineLogMel.window_level"]
