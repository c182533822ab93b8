"""The docs say what is there: every link and anchor in the README and docs/ resolves, every
`streamtag` command line in the README's shell blocks names a command and flags that exist, and
every module or file the package's docstrings and comments name exists."""

from __future__ import annotations

import dataclasses
import re
import shlex
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

import pytest

from streamtag import values

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "CONTRIBUTING.md",
                *(ROOT / "docs").rglob("*.md")])
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\s*$")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\*", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def prose(path: Path) -> list[str]:
    """The page's lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.strip()) or line.strip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


@cache
def anchors(path: Path) -> frozenset[str]:
    found: dict[str, int] = {}
    out = set()
    for line in prose(path):
        m = re.match(r"^#+\s+(.*)$", line)
        if m:
            base = slug(m.group(1))
            n = found.get(base, 0)
            found[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return frozenset(out)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_and_anchor_in_the_docs_resolves(page: Path):
    broken = []
    for line in prose(page):
        for target in LINK.findall(line):
            if re.match(r"^[a-z]+:", target):  # https:, mailto: ...: not ours to check
                continue
            file_part, _, anchor = target.partition("#")
            dest = (page.parent / file_part).resolve() if file_part else page
            if not dest.exists():
                broken.append(f"{target}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{target}: no heading with that anchor in {dest.name}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def readme_command_lines() -> list[list[str]]:
    """The `streamtag ...` commands of the README's sh blocks, each as its words."""
    commands, lang = [], None
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        m = FENCE.match(line.strip())
        if m and lang is None:
            lang = m.group(1) or "text"
            continue
        if line.strip() == "```":
            lang = None
            continue
        if lang != "sh":
            continue
        for part in re.split(r"&&|\|", line.split("#")[0]):
            words = shlex.split(part)
            if words[:1] == ["streamtag"]:
                commands.append(words[1:])
    return commands


@cache
def help_text(*command: str) -> str:
    done = subprocess.run([sys.executable, "-m", "streamtag", *command, "--help"],
                          capture_output=True, text=True, cwd=tempfile.gettempdir())
    assert done.returncode == 0, f"streamtag {' '.join(command)} --help failed: {done.stderr}"
    return done.stdout


def test_the_readme_names_only_commands_and_flags_that_exist():
    commands = readme_command_lines()
    assert len(commands) >= 10, commands  # the parse found the README's blocks
    for words in commands:
        path = [words[0]]
        # a subcommand's own subcommand (models install, control add) where its help lists it
        if len(words) > 1 and re.match(r"^[a-z]+$", words[1]) and re.search(
                r"\{[^}]*\b" + re.escape(words[1]) + r"\b[^}]*\}", help_text(words[0])):
            path.append(words[1])
        text = help_text(*path)
        for word in words[len(path):]:
            if word.startswith("--"):
                flag = word.split("=")[0]
                assert re.search(re.escape(flag) + r"\b", text), \
                    f"README: `streamtag {' '.join(words)}`: {flag} is not an option of " \
                    f"`streamtag {' '.join(path)}`"


PACKAGE = ROOT / "streamtag"
FILES = {p.name for top in ("streamtag", "tests", "benchmarks", "deploy", "fuzz", "csrc", "models")
         for p in (ROOT / top).rglob("*") if p.is_file()}
NAMED_FILE = re.compile(r"(?<![\w/.-])((?:[\w-]+/)*[a-z_][\w-]*\.(?:py|toml|md|cc|h))\b")
NAMED_MODULE = re.compile(r"\bstreamtag(?:\.[a-z_][a-z0-9_]*)+")


# Files of other projects that comments name on purpose
EXTERNAL = {
    "configuration.py": "the musicnn package's, which models install reads",
    "evaluate.py": "the MediaEval 2019 Emotion and Theme task's evaluation script",
    "calculate_decisions.py": "the same task's decision script",
}


def file_exists(name: str) -> bool:
    if name in EXTERNAL:
        return True
    if "/" not in name:
        return name in FILES or (ROOT / name).exists()
    return any((base / name).exists() for base in (ROOT, PACKAGE, ROOT / "docs"))


def module_exists(dotted: str) -> bool:
    """``streamtag.a.b`` is a module or package, or a name defined in one (its last parts)."""
    parts = dotted.split(".")[1:]
    folder = PACKAGE
    for i, part in enumerate(parts):
        if (folder / part).is_dir():
            folder = folder / part
            continue
        if (folder / f"{part}.py").is_file():
            source = (folder / f"{part}.py").read_text(encoding="utf-8")
            rest = parts[i + 1:]
            return not rest or re.search(rf"\b{re.escape(rest[0])}\b", source) is not None
        init = folder / "__init__.py"
        return part.startswith("_core") or (init.is_file() and re.search(
            rf"\b{re.escape(part)}\b", init.read_text(encoding="utf-8")) is not None)
    return True


def test_every_module_and_file_the_code_names_exists():
    stale = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for lineno, line in enumerate(text.splitlines(), 1):
            comment = line.split("#", 1)[1] if "#" in line else ""
            # docstrings and comments: a line inside triple quotes or after a '#'
            for candidate in (line if ('"""' in text and not line.lstrip().startswith(
                    ("import", "from"))) else comment,):
                for name in NAMED_FILE.findall(candidate):
                    if name.endswith(".py") and not file_exists(name):
                        stale.append(f"{path.relative_to(ROOT)}:{lineno}: {name}")
                for dotted in NAMED_MODULE.findall(candidate):
                    # a file name (streamtag.json) or a logger's name is not a module
                    if dotted.endswith(".json") or "getLogger(" in line:
                        continue
                    if not module_exists(dotted):
                        stale.append(f"{path.relative_to(ROOT)}:{lineno}: {dotted}")
    assert not stale, "names of modules or files that do not exist:\n" + "\n".join(stale)


def test_the_configuration_reference_is_made_from_the_code():
    from streamtag.commands.reference import reference
    from streamtag.daemon.reference import missing_help, settings

    assert not missing_help(), f"settings that declare no help=: {missing_help()}"
    page = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert page == reference(), ("docs/config.md is not current: python -m "
                                 "streamtag.commands.reference > docs/config.md")
    flags = {values.flag_of(f) for _, f in settings()} - {None}
    run_help = help_text("run")
    for flag in sorted(flags):
        assert re.search(re.escape(flag) + r"\b", run_help), f"{flag} is not a flag of run"


def test_the_reference_of_records_file_is_made_from_its_declarations():
    """Each [retention] key declares its meaning, and its flag ``--keep KEY=SPAN``, which
    record takes and whose kinds are the keys."""
    from streamtag.history import config, retention

    record_help = help_text("record")
    assert "--config" in record_help and "--keep" in record_help
    kinds = [f.name for f in dataclasses.fields(retention.Retention)]
    for section, declared in config.settings():
        assert values.help_of(declared), f"{section}.{declared.name} declares no help="
        assert values.flag_of(declared) == f"--keep {declared.name}=SPAN"
        assert declared.name in kinds
    assert [f.name for _, f in config.settings()] == kinds
