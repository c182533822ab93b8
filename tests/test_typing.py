"""The package's types as a type checker sees them: streamtag ships ``py.typed``, and
``_core.pyi`` names exactly what the C++ extension defines (CI runs ``mypy streamtag``)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import streamtag
from streamtag import _core

PACKAGE = Path(streamtag.__file__).resolve().parent
STUB = PACKAGE / "_core.pyi"


def stub_names() -> dict[str, set[str]]:
    """Each public name of the stub, with its members for a class."""
    names: dict[str, set[str]] = {}
    for node in ast.parse(STUB.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ClassDef):
            names[node.name] = (
                {n.name for n in node.body if isinstance(n, ast.FunctionDef)} - {"__init__"}
                | {n.target.id for n in node.body
                   if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)})
        elif isinstance(node, ast.FunctionDef):
            names[node.name] = set()
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                and not node.target.id.startswith("_"):
            names[node.target.id] = set()
    return names


def test_the_package_says_it_is_typed():
    assert (PACKAGE / "py.typed").is_file()


def test_the_stub_names_every_name_of_the_extension_and_no_other():
    stub = stub_names()
    built = {name for name in dir(_core) if not name.startswith("_")}
    assert set(stub) == built, (sorted(built - set(stub)), sorted(set(stub) - built))
    for name, members in stub.items():
        thing = getattr(_core, name)
        if inspect.isclass(thing):
            have = {m for m in dir(thing) if not m.startswith("_")}
            assert members == have, (name, sorted(have - members), sorted(members - have))
