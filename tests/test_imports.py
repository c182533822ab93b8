"""The package's import structure, as docs/architecture.md draws it: the packages sit in layers
and import only their own layer's package or lower ones (``LAYERS``), nothing imports in a cycle
(imports inside functions and under ``TYPE_CHECKING`` count: they are arrows of the design even
where Python would tolerate them), and no module uses another's private name (``_x``)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "streamtag"
# The compiled extension is private to the package (the scikit-build pattern of a private
# ``_core`` re-exported by the package): frontend.py wraps its log-mel classes, and protocol.py
# calls its writer of JSON number arrays.
EXTENSION = "streamtag._core"


# The layers, lowest first. A module may import modules of its own package and of the packages
# of lower layers; packages that share a layer do not import one another (the daemon never
# imports the trainer, the catalog never the wire). A package is a name and everything below it;
# ``streamtag`` itself (the re-export of the frontend) is only that one module.
LAYERS: list[tuple[str, ...]] = [
    ("streamtag._core", "streamtag.errors"),
    ("streamtag.values", "streamtag.fsutil", "streamtag.backoff", "streamtag.places",
     "streamtag.text"),
    ("streamtag.frontend", "streamtag.audio", "streamtag.nets"),
    ("streamtag.sources", "streamtag.model"),
    ("streamtag.engine",),
    ("streamtag.catalog", "streamtag.wire"),
    ("streamtag.daemon", "streamtag.history", "streamtag.train", "streamtag.bridge"),
    ("streamtag.web",),
    ("streamtag.commands",),
]
# What joins a package of the table: the root module joins the frontend it re-exports; the
# command line's parser and ``python -m streamtag`` join the commands.
JOINS = {"streamtag": "streamtag.frontend", "streamtag.cli": "streamtag.commands",
         "streamtag.__main__": "streamtag.commands"}


def _package(module: str) -> str | None:
    """The package of ``LAYERS`` that ``module`` belongs to, or None."""
    if module in JOINS:
        return JOINS[module]
    found = [name for layer in LAYERS for name in layer
             if module == name or module.startswith(name + ".")]
    return max(found, key=len) if found else None


def _level(package: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if package in layer)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in it (the extension counts as a
    module of its own, so ``from streamtag import _core`` is not an import of the root)."""
    known = set(modules) | {EXTENSION}
    graph: dict[str, set[str]] = {}
    for module, entries in _imports(modules).items():
        targets = set()
        for source, name, _ in entries:
            if name and f"{source}.{name}" in known:
                targets.add(f"{source}.{name}")
            elif source in known:
                targets.add(source)
        graph[module] = targets - {module}
    return graph


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute name an ``ImportFrom`` imports from (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[:len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(modules: dict[str, Path]) -> dict[str, list[tuple[str, str | None, int]]]:
    """For every module, each import anywhere in it: ``(module imported from, name or None,
    line)``; ``from streamtag.train import loop`` counts as importing ``streamtag.train.loop``."""
    found: dict[str, list[tuple[str, str | None, int]]] = {}
    for module, path in modules.items():
        entries = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                entries += [(alias.name, None, node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(module, path, node)
                for alias in node.names:
                    if f"{source}.{alias.name}" in modules:  # a submodule, not a name
                        entries.append((f"{source}.{alias.name}", None, node.lineno))
                    else:
                        entries.append((source, alias.name, node.lineno))
        found[module] = entries
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (a list of nodes, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_package_has_no_import_cycle() -> None:
    graph = _graph(_modules())
    assert {"streamtag.train.loop", "streamtag.engine.batching", "streamtag.wire.protocol",
            "streamtag.commands.train"} <= set(graph)
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_module_has_a_layer() -> None:
    modules = _modules()
    homeless = sorted(m for m in modules if _package(m) is None)
    assert not homeless, f"modules in no layer of LAYERS: {homeless}"


def test_imports_point_down_the_layers() -> None:
    modules = _modules()
    graph = _graph(modules)
    wrong = []
    for module, targets in graph.items():
        own = _package(module)
        for target in targets:
            theirs = _package(target)
            if theirs is None or own is None or theirs == own:
                continue
            if _level(theirs) >= _level(own):
                where = "the same layer" if _level(theirs) == _level(own) else "a higher layer"
                wrong.append(f"{module} imports {target} ({theirs}, {where})")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_layer_check_sees_arrows_up_and_across() -> None:
    # The rule itself, on names: an arrow up and one across a layer are caught, one down is not.
    assert _package("streamtag.engine.batching") == "streamtag.engine"
    assert _package("streamtag") == "streamtag.frontend"
    assert _package("streamtag.cli") == "streamtag.commands"
    assert _level("streamtag.engine") > _level("streamtag.model")
    assert _level("streamtag.daemon") == _level("streamtag.train")
    assert _level("streamtag.wire") > _level("streamtag.engine")


def test_the_package_has_no_import_cycle_through_the_trainer_s_entry_points() -> None:
    # The trainer's modules below the run (runtime, data, windows, optim, epoch) never import
    # the run, its export or the command line.
    modules = _modules()
    imports = _imports(modules)
    above = {"streamtag.train.loop", "streamtag.train.export", "streamtag.train.run",
             "streamtag.commands.train", "streamtag.train.pretrain"}
    below = ["streamtag.train." + name for name in (
        "runtime", "data", "windows", "optim", "epoch", "encoder_file", "cache", "metrics",
        "augment", "combine", "recipe", "datasets")]
    wrong = [f"{m} imports {source}" for m in below for source, _, _ in imports[m]
             if source in above]
    assert not wrong, wrong


def test_no_private_name_crosses_modules() -> None:
    modules = _modules()
    wrong = []
    for module, entries in _imports(modules).items():
        for source, name, line in entries:
            if not source.startswith("streamtag") or source == module:
                continue
            private_module = any(part.startswith("_") and not part.startswith("__")
                                 for part in source.split("."))
            if private_module and source != EXTENSION:
                wrong.append(f"{module}:{line} imports the private module {source}")
            if name and name.startswith("_") and not name.startswith("__") \
                    and f"{source}.{name}" != EXTENSION:
                wrong.append(f"{module}:{line} imports {source}.{name}")
    # A private name reached through an imported module (``loop._save_atomic``) counts too.
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = _resolve(module, path, node)
                for alias in node.names:
                    if f"{source}.{alias.name}" in modules:
                        aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname and alias.name in modules:
                        aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and aliases[node.value.id] != module
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                wrong.append(f"{module}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    assert not wrong, "\n".join(wrong)
