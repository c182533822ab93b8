"""The command line's manners, as users of git, FFmpeg and yt-dlp expect them (clig.dev): every
command takes --help, --version, -q and -v; a usage error exits 2 and a failure 1, each said on
stderr with nothing on stdout; --json output parses; - reads standard input; colour only on a
terminal and never under NO_COLOR; the daily commands come first in the help.

The per-command checks are derived from the parser, so a new command is covered (and must be
given its arguments below)."""

from __future__ import annotations

import http.server
import io
import json
import logging
import re
import sys
import threading
from pathlib import Path

import pytest
from support.helpers import (
    free_port,
    run_python,
    run_side_by_side,
    run_streamtag,
    stop_process,
    wait_until,
)

from streamtag import __version__
from streamtag.audio.files import write_audio
from streamtag.audio.synthetic import SyntheticConfig, generate_clip
from streamtag.catalog.shipped import SYNTHETIC_NOTE, default_model_path
from streamtag.cli import build_parser, commands, main
from streamtag.commands import use_color
from streamtag.commands.demo import run_demo

COMMANDS = dict(commands(build_parser()))

# Arguments that parse for each command (its required ones); a new command is added here.
VALID = {
    "run": [], "listen": [], "tag": ["a.wav"], "dashboard": [], "record": [], "history": [],
    "status": [], "control add": ["s1", "a.wav"], "control remove": ["s1"],
    "control reload": ["default"], "control ping": [], "models list": [],
    "models install": ["musicnn-msd"], "models complete": ["default"],
    "models info": ["default"], "models remove": ["x"],
    "models calibrate": ["default", "a.wav"], "models quantize": ["default", "a.wav"],
    "demo": [], "devices": [], "proxy": [], "keys generate": ["keys"], "features": ["a.wav"],
    "bridge mqtt": [],
    "protocol schema": [],
    "train": ["recipe.toml"], "pretrain": ["recipe.toml"], "eval": ["m.pt", "recipe.toml"],
    "ensemble": ["a.pt", "b.pt", "--out", "e.pt"],
}


def test_every_command_is_listed_here():
    assert sorted(VALID) == sorted(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_exits_0_and_shows_the_common_flags(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([*command.split(), "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--quiet" in out and "--verbose" in out and "--version" in out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_version_prints_the_version(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([*command.split(), *VALID[command], "--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"streamtag {__version__}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_quiet_and_verbose_are_taken(command):
    parser = build_parser()
    assert parser.parse_args([*command.split(), *VALID[command], "-q"]).quiet
    assert parser.parse_args([*command.split(), *VALID[command], "-vv"]).verbose == 2


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_usage_error_exits_2_said_on_stderr_only(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([*command.split(), *VALID[command], "--no-such-flag"])
    assert done.value.code == 2
    said = capsys.readouterr()
    assert said.out == ""
    assert f"streamtag {command}: error: unrecognized arguments: --no-such-flag" in said.err
    assert said.err.startswith(f"usage: streamtag {command}")  # the command's usage, not the top


def test_the_program_itself_says_its_version_and_its_usage_errors():
    done = run_streamtag("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"streamtag {__version__}"
    done = run_streamtag("tag")
    assert done.returncode == 2 and done.stdout == ""
    assert "the following arguments are required: FILE" in done.stderr


# -- the top-level help ------------------------------------------------------------------------


def test_the_help_lists_the_daily_commands_first_and_training_last():
    done = run_streamtag("--help")
    assert done.returncode == 0
    listed = re.findall(r"^    (\w+)", done.stdout, re.M)
    assert sorted(listed) == sorted({name.split()[0] for name in COMMANDS})
    daily = ["run", "listen", "tag", "dashboard", "record", "history", "status"]
    assert listed[:len(daily)] == daily
    assert set(listed[-5:]) == {"features", "train", "pretrain", "eval", "ensemble"}


HEAVY = ("numpy", "zmq", "torch", "onnxruntime", "sqlalchemy", "av")
# What a Python process holds after the code given, of HEAVY: one JSON list on stdout.
LOADED = "\nimport json, sys\nprint(json.dumps([m for m in {heavy!r} if m in sys.modules]))\n"


@pytest.mark.parametrize("code", [
    "import streamtag.cli",
    "import streamtag.cli\nstreamtag.cli.build_parser()",
    # the whole help of every command, as a user's --help or a shell's completion reads it
    "import contextlib, io\nfrom streamtag.cli import build_parser, commands\n"
    "with contextlib.redirect_stdout(io.StringIO()):\n"
    "    for _, command in commands(build_parser()):\n        command.format_help()",
])
def test_parsing_the_command_line_loads_no_command_s_dependencies(code):
    loaded = json.loads(run_python(code + LOADED.format(heavy=HEAVY)))
    assert loaded == [], f"{code!r} loaded {loaded}: import them where the command runs"


def test_the_help_loads_no_command_s_dependencies():
    code = ("import runpy, sys\nsys.argv = ['streamtag', '--help']\ntry:\n"
            "    runpy.run_module('streamtag', run_name='__main__')\nexcept SystemExit:\n"
            "    pass")
    loaded = json.loads(run_python(code + LOADED.format(heavy=HEAVY)).splitlines()[-1])
    assert loaded == [], f"streamtag --help loaded {loaded}"


# -- a daemon to ask ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def music(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("music")
    # plucked notes over drums: music to the content classifier from its first window (a clip
    # of one held note may start as a tone; tests/engine/test_content.py measures the clips)
    audio, _, _ = generate_clip(1, SyntheticConfig(sample_rate=16000, clip_seconds=5.0))
    path = folder / "clip.wav"
    write_audio(path, audio, 16000)
    return path


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, music):
    """`streamtag run` with a control socket, heartbeats every 0.25 s and --allow-file-root
    the music's folder; yields (feed endpoint, control endpoint)."""
    folder = tmp_path_factory.mktemp("daemon")
    feed, control = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    config = folder / "daemon.toml"
    config.write_text(f'[publish]\nendpoint = "{feed}"\nheartbeat_s = 0.25\n'
                      f'[control]\nendpoint = "{control}"\n'
                      f'model_roots = ["{default_model_path().parent}"]\n')
    proc = run_streamtag("run", "--config", str(config), "--allow-file-root",
                         str(music.parent), "-q", popen=True)
    try:
        wait_until(lambda: run_streamtag("control", "ping", "--control", control).returncode == 0
                   or proc.poll() is not None, 60, "the daemon's control socket")
        assert proc.poll() is None, proc.stderr.read()
        yield feed, control
    finally:
        stop_process(proc)
        proc.communicate(timeout=10)  # what it said, and its pipes closed


# -- --json ------------------------------------------------------------------------------------


def offers_json(parser) -> bool:
    return any("--json" in action.option_strings and action.nargs == 0
               for action in parser._actions)


def json_argv(command: str, daemon, music: Path, tmp: Path) -> list[str]:
    """Arguments with which ``command --json`` prints data here."""
    feed, control = daemon
    return {
        "tag": [str(music)], "features": [str(music), "--out", str(tmp / "f.npy")],
        "history": ["--db", f"sqlite:///{tmp / 'history.db'}"],
        "listen": [feed, "--count", "2"], "status": ["--control", control],
        "control add": ["json1", str(music), "--control", control],
        "control remove": ["json1", "--control", control],
        "control reload": [str(default_model_path()), "--control", control],
        "control ping": ["--control", control], "models list": [],
        "models info": ["default"], "devices": [], "keys generate": [str(tmp / "keys")],
    }[command]


@pytest.mark.parametrize("command", sorted(c for c, p in COMMANDS.items() if offers_json(p)))
def test_json_output_parses(command, daemon, music, tmp_path):
    if command == "history":  # a database with the schema, nothing recorded
        done = run_streamtag("record", "--upgrade", "--db", f"sqlite:///{tmp_path / 'history.db'}")
        assert done.returncode == 0, done.stderr
    if command == "control remove":
        done = run_streamtag("control", "add", "json1", str(music), "--control", daemon[1])
        assert done.returncode == 0, done.stderr
    done = run_streamtag(*command.split(), *json_argv(command, daemon, music, tmp_path),
                         "--json", timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    try:
        json.loads(done.stdout)  # one JSON value
    except json.JSONDecodeError:
        for line in done.stdout.splitlines():  # or one a line (tag, listen)
            json.loads(line)


# -- failures: exit 1, said on stderr ----------------------------------------------------------

# For each command, arguments with which its work fails (a file or a daemon not there), or None
# where it has no such failure of its own (the reason beside it).
NO_DAEMON = "tcp://127.0.0.1:{port}"
FAILING = {
    "tag": ["/no/such/file.wav"], "features": ["/no/such/file.wav"],
    "history": ["--db", "sqlite:////no/such/history.db"],
    "status": ["--control", NO_DAEMON], "control ping": ["--control", NO_DAEMON],
    "control add": ["s1", "a.wav", "--control", NO_DAEMON],
    "control remove": ["s1", "--control", NO_DAEMON],
    "control reload": ["default", "--control", NO_DAEMON],
    "run": ["--source", "file:/no/such/file.wav", "--exit-when-done", "--control", "",
            "--publish", NO_DAEMON],
    "listen": None,  # listens until --count, --duration or Ctrl-C, a daemon there or not
    "dashboard": None, "record": None, "proxy": None,  # serve until a signal
    "bridge mqtt": None,  # bridges until a signal, waiting for a broker that is down
    "demo": None,  # plays a piece it makes
    "devices": None,  # lists what there is, or none
    # refusals of their arguments (unknown names, files that cannot be used): exit 2
    "models list": None, "models install": None, "models complete": None, "models info": None,
    "models remove": None,
    "models calibrate": None, "models quantize": None, "keys generate": None, "train": None,
    "pretrain": None, "eval": None, "ensemble": None,
    "protocol schema": None,  # prints what the code declares
}


def test_every_command_s_failure_is_listed():
    assert sorted(FAILING) == sorted(COMMANDS)


@pytest.fixture(scope="module")
def failed():
    """Each failing command's (exit code, stdout, stderr), all started at once: a command that
    asks a daemon that is not there waits its whole control timeout (2 s) before failing."""
    commands = {command: (*command.split(), *(arg.format(port=free_port()) for arg in argv))
                for command, argv in FAILING.items() if argv}
    done = run_side_by_side(*commands.values())
    return {command: (d.returncode, d.stdout, d.stderr)
            for command, d in zip(commands, done, strict=True)}


@pytest.mark.parametrize("command", sorted(c for c, argv in FAILING.items() if argv))
def test_a_failure_exits_1_said_on_stderr(command, failed):
    returncode, stdout, stderr = failed[command]
    assert returncode == 1, stderr
    assert stdout == ""
    assert stderr.startswith(f"streamtag {command.split()[0]}"), stderr
    assert "Traceback" not in stderr


def test_tag_says_a_file_it_cannot_read_on_stderr_and_tags_the_others(music):
    done = run_streamtag("tag", "/no/such/file.wav", str(music))
    assert done.returncode == 1
    assert "/no/such/file.wav" in done.stderr and "no such file" in done.stderr
    assert "/no/such" not in done.stdout and "ERROR" not in done.stdout
    assert done.stdout.startswith(f"{music}:")


# -- standard input, URLs ----------------------------------------------------------------------


def test_tag_reads_standard_input(music):
    with open(music, "rb") as stdin:
        done = run_streamtag("tag", "-", "--json", stdin=stdin)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["path"] == "-" and result["error"] is None
    assert result["windows"] >= 2 and result["tags"]
    same = json.loads(run_streamtag("tag", str(music), "--json").stdout)
    assert result["tags"] == same["tags"]


def test_features_reads_standard_input_to_the_file_given(music, tmp_path):
    out = tmp_path / "stdin.npy"
    with open(music, "rb") as stdin:
        done = run_streamtag("features", "-", "--out", str(out), "--json", stdin=stdin)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["frames"] > 100 and out.is_file()


def test_tag_of_a_url_says_to_run_the_daemon_on_it():
    done = run_streamtag("tag", "http://127.0.0.1:8000/x")
    assert done.returncode == 2 and done.stdout == ""
    assert "no such file" not in done.stderr
    assert "tag reads files" in done.stderr
    assert "streamtag run --source http://127.0.0.1:8000/x" in done.stderr


# -- run: --allow-file-root, --exit-when-done --------------------------------------------------


def test_allow_file_root_lets_control_add_files_below_it_and_the_refusal_names_it(
        daemon, music, tmp_path):
    _, control = daemon
    done = run_streamtag("control", "add", "below", str(music), "--control", control)
    assert done.returncode == 0, done.stderr
    outside = tmp_path / "outside.wav"
    outside.write_bytes(music.read_bytes())
    done = run_streamtag("control", "add", "outside", str(outside), "--control", control)
    assert done.returncode == 1 and done.stdout == ""
    assert "[control] file_roots" in done.stderr and "--allow-file-root DIR" in done.stderr


class NotFound(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the handler's name is http.server's
        self.send_error(404)

    def log_message(self, *args):
        pass


def test_exit_when_done_ends_on_a_station_that_answers_404_for_ever(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = tmp_path / "daemon.toml"
        url = f"http://127.0.0.1:{server.server_port}/stream"
        config.write_text(f'[publish]\nendpoint = "tcp://127.0.0.1:{free_port()}"\n'
                          '[control]\nendpoint = ""\n'
                          f'[[sources]]\nid = "gone"\nspec = "{url}"\n'
                          'initial_backoff_s = 0.05\nmax_backoff_s = 0.2\n')
        proc = run_streamtag("run", "--config", str(config), "--exit-when-done", popen=True)
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            stop_process(proc)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 1, err
    assert "1 of 1 streams failed: gone" in err and "HTTP 404" in err, err
    assert "gave up after 5 reconnects" in err, err


# -- listen --stream ---------------------------------------------------------------------------


def test_listen_to_a_stream_prints_no_heartbeats(daemon):
    feed, _ = daemon
    done = run_streamtag("listen", feed, "--stream", "nothing-here", "--json", "--duration", "2")
    assert done.returncode == 0, done.stderr
    assert "heartbeat" not in done.stdout
    # the daemon's heartbeats were heard: no warning that nothing is
    assert "nothing heard" not in done.stderr
    everything = run_streamtag("listen", feed, "--json", "--count", "1")
    assert json.loads(everything.stdout)["topic"] == "heartbeat"  # the same daemon, unfiltered


# -- colour ------------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_and_never_under_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_color(Terminal()) and not use_color(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_color(Terminal())
    shown = Terminal()
    assert run_demo(seconds=12.0, speed=20.0, device="cpu", out=shown) == 0
    assert ">>> " in shown.getvalue() and "\x1b[" not in shown.getvalue()
    monkeypatch.delenv("NO_COLOR")
    shown = Terminal()
    assert run_demo(seconds=12.0, speed=20.0, device="cpu", out=shown) == 0
    assert "\x1b[" in shown.getvalue()  # the same demo on a terminal: painted


def test_tag_over_several_files_shows_progress_on_a_terminal_unless_quiet(
        music, monkeypatch, capsys):
    shown = Terminal()
    monkeypatch.setattr(sys, "stderr", shown)
    assert main(["tag", str(music), str(music)]) == 0
    assert "tagging" in shown.getvalue() and "file" in shown.getvalue()
    assert capsys.readouterr().out.count(f"{music}:") == 2  # the data, on stdout
    for quiet in (["-q"], []):  # -q, or stderr not a terminal: no bar
        stderr = Terminal() if quiet else io.StringIO()
        monkeypatch.setattr(sys, "stderr", stderr)
        assert main(["tag", str(music), str(music), *quiet]) == 0
        # no bar; off a terminal, only the note on what the shipped model knows
        assert stderr.getvalue() == ("" if quiet else
                                     f"streamtag tag: note: {SYNTHETIC_NOTE}\n")


def test_quiet_leaves_only_the_data(music, tmp_path):
    done = run_streamtag("features", str(music), "--out", str(tmp_path / "f.npy"), "-q")
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""
    done = run_streamtag("tag", str(music), "-q")
    assert done.returncode == 0 and done.stdout.startswith(f"{music}:")


def test_run_quiet_says_nothing_and_verbose_more(music):
    run = ["run", "--source", str(music), "--exit-when-done", "--control", "", "--publish",
           "tcp://127.0.0.1:*"]
    done = run_streamtag(*run, "-q", timeout=120)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", done.stderr
    done = run_streamtag(*run, "-v", timeout=120)  # more: the info logging of its parts
    assert done.returncode == 0 and " INFO streamtag." in done.stderr, done.stderr


# -- the demo: what it shows agrees with the truth it prints -----------------------------------


def test_the_demo_switches_on_every_tag_of_its_piece_and_marks_the_model_s_mistakes():
    out = io.StringIO()
    assert run_demo(seconds=60.0, speed=20.0, device="cpu", out=out) == 0
    lines = out.getvalue().splitlines()
    piece = next(line for line in lines if line.startswith("  the piece: "))
    sections = [(float(a), float(b), tags.split(", ")) for a, b, tags in re.findall(
        r"(\d+)-(\d+) s ([a-z, ]+?)(?:;|$)", piece.removeprefix("  the piece: "))]
    truth = {tag for _, _, tags in sections for tag in tags}
    events = [(line, re.search(r">>> (\w+) ON .* at ([\d.]+) s", line)) for line in lines]
    events = [(line, m.group(1), float(m.group(2))) for line, m in events if m]
    assert truth <= {tag for _, tag, _ in events}, truth - {tag for _, tag, _ in events}
    # each section is announced as it starts, with its tags
    for start, end, tags in sections:
        assert f"  -- {start:.0f}-{end:.0f} s of the piece: {', '.join(tags)}" in lines
    for line, tag, at in events:
        # what the piece is here: the section playing, or the one before (a 3 s window)
        here = {t for start, end, tags in sections if start - 1 < at and end + 1 > at - 3
                for t in tags}
        if tag not in here:
            assert "(the model errs: the piece here is" in line, line


def test_the_help_and_the_docs_say_the_conventions():
    docs = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()
    assert "NO_COLOR" in docs and "exit status 2" in docs and "--allow-file-root" in docs


# -- the shipped model on audio a user brings ----------------------------------------------------

def test_tag_and_run_with_the_shipped_model_say_once_what_it_knows(music, tmp_path):
    done = run_streamtag("tag", str(music), str(music))
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("knows synthetic acoustics only") == 1, done.stderr
    assert "streamtag models install music" in done.stderr
    named = run_streamtag("tag", str(music), "--model", str(default_model_path()))
    assert named.returncode == 0 and "synthetic acoustics" not in named.stderr, named.stderr
    run = run_streamtag("run", "--source", str(music), "--exit-when-done", "--control", "",
                        "--publish", "tcp://127.0.0.1:*", timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("knows synthetic acoustics only") == 1, run.stderr


def test_the_trainer_s_bars_show_on_a_terminal_unless_quiet(monkeypatch):
    from streamtag.train.progress import progress

    monkeypatch.setattr(sys, "stderr", Terminal())
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", logging.WARNING)  # as a command without -q sets it
    bar = progress(total=3)
    assert not bar.disable
    bar.close()
    monkeypatch.setattr(root, "level", logging.ERROR)  # as -q sets it
    assert progress(total=3).disable


def test_dashboard_quiet_says_nothing_while_it_serves():
    import urllib.request

    port = free_port()
    proc = run_streamtag("dashboard", "-q", "--port", str(port), "--connect",
                         f"tcp://127.0.0.1:{free_port()}", popen=True)

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_until(answers, 60, "the dashboard's /healthz")
    finally:
        stop_process(proc)
    out, err = proc.communicate(timeout=30)
    assert out == "" and err == "", err
