"""The package's import structure: the trainer's modules import one another one way (no cycle,
counting imports inside functions too), and no module uses another's private name (``_x``)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "streamtag"
# The compiled extension is private to the package (the scikit-build pattern of a private
# ``_core`` re-exported by the package): frontend.py wraps its log-mel classes, and protocol.py
# calls its writer of JSON number arrays.
EXTENSION = "streamtag._core"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


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


def test_the_trainer_has_no_import_cycle() -> None:
    modules = _modules()
    trainer = {m for m in modules if m.startswith("streamtag.train.")}
    assert {"streamtag.train.loop", "streamtag.train.pretrain", "streamtag.train.export"} <= trainer
    graph = {m: {source for source, _, _ in _imports(modules)[m]
                 if source in trainer and source != m} for m in trainer}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


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
