"""Installed models found by name: one resolver behind --model of run, tag, demo, eval and
ensemble, the TOML [model] path, and the control socket's reload_model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.helpers import free_port, run_streamtag, tiny_model_file, with_changed_weights

from streamtag.audio.files import write_audio
from streamtag.audio.testsignals import music_like
from streamtag.catalog import installed, musicnn_import
from streamtag.cli import main
from streamtag.daemon.config import (
    ControlConfig,
    DaemonConfig,
    ModelConfig,
    PublishConfig,
    load_config,
)
from streamtag.daemon.daemon import Daemon
from streamtag.errors import ModelError
from streamtag.model.manifest import read_manifest
from streamtag.wire.control import control_request


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A $STREAMTAG_HOME with two installed models, tiny-a and tiny-b."""
    root = tmp_path / "home"
    (root / "models").mkdir(parents=True)
    tiny_model_file(root / "models" / "tiny-a.pt", seed=1, name="tiny a")
    tiny_model_file(root / "models" / "tiny-b.pt", seed=2, name="tiny b")
    monkeypatch.setenv(installed.HOME_ENV, str(root))
    return root


def test_names_resolve_to_installed_files_and_paths_pass_through(home, tmp_path):
    assert list(installed.installed()) == ["tiny-a", "tiny-b"]
    assert installed.resolve_model("tiny-a") == str(home / "models" / "tiny-a.pt")
    assert installed.resolve_model(None) is None
    elsewhere = str(tmp_path / "elsewhere.pt")  # a path is the caller's to check
    assert installed.resolve_model(elsewhere) == elsewhere
    with pytest.raises(ModelError) as caught:
        installed.resolve_model("musicnn-msd")
    message = str(caught.value)
    assert "tiny-a, tiny-b" in message and "streamtag models install musicnn-msd" in message


def test_default_names_the_shipped_model(home, capsys):
    """`status` and `demo` call the shipped model "default", but `--model default` and
    `models info default` said no model of that name was installed."""
    from streamtag.catalog.shipped import default_model_path

    assert installed.resolve_model("default") == str(default_model_path())
    assert main(["models", "info", "default"]) == 0
    assert "name:        default" in capsys.readouterr().out
    with pytest.raises(ModelError, match=r"'default' \(the model shipped with streamtag\)"):
        installed.resolve_model("nothing-like-it")


def test_an_unfinished_install_is_not_listed(home):
    (home / "models" / ".musicnn-msd.pt.tmp").mkdir()  # what a killed install leaves
    assert list(installed.installed()) == ["tiny-a", "tiny-b"]


def test_the_default_folder_is_the_user_data_folder(monkeypatch):
    import platformdirs

    monkeypatch.delenv(installed.HOME_ENV, raising=False)
    expected = platformdirs.user_data_path("streamtag", appauthor=False) / "models"
    assert installed.models_folder() == expected


@pytest.fixture
def short_flac(tmp_path):
    path = tmp_path / "song.flac"
    write_audio(path, music_like(4.0, 16000, seed=4), 16000)
    return path


def test_tag_and_ensemble_take_names(home, short_flac, tmp_path):
    env = {**os.environ, installed.HOME_ENV: str(home)}
    done = run_streamtag("tag", str(short_flac), "--model", "tiny-a", "--device", "cpu", "--json",
                         env=env)
    assert done.returncode == 0, done.stderr
    assert '"path"' in done.stdout
    out = tmp_path / "both.pt"
    assert main(["ensemble", "tiny-a", "tiny-b", "--out", str(out)]) == 0
    assert read_manifest(out).name == "ensemble of tiny a, tiny b"


def test_an_ensemble_of_one_model_is_refused(home, tmp_path, capsys):
    out = tmp_path / "one.pt"
    assert main(["ensemble", "tiny-a", "--out", str(out)]) == 2
    assert "an ensemble averages two or more models" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("command", [
    ("tag", "song.flac", "--model", "nope"), ("ensemble", "tiny-a", "nope", "--out", "e.pt"),
    ("eval", "nope", "recipe.toml"), ("run", "--model", "nope"), ("demo", "--model", "nope")])
def test_an_unknown_name_lists_the_installed_models(home, command, capsys):
    assert main(list(command)) == 2
    error = capsys.readouterr().err
    assert "no model named 'nope' is installed (installed: tiny-a, tiny-b" in error
    # not a name `models install` knows: no advice to install it, the names it knows instead
    assert "streamtag models install nope" not in error
    assert ("musicnn-msd, vgg-mtt, vgg-msd, music-small after `streamtag models install NAME`"
            in error)


@pytest.mark.parametrize("typed, said", [
    ("tiny_a", "did you mean 'tiny-a'? (installed)"),
    ("Tiny-B", "did you mean 'tiny-b'? (installed)"),
    ("musicnn_msd", "did you mean 'musicnn-msd'? install it with `streamtag models install "
                    "musicnn-msd`"),
    ("vgg-mtt", "; install it with `streamtag models install vgg-mtt`")])
def test_a_mistyped_name_gets_the_name_meant(home, typed, said, capsys):
    assert main(["tag", "song.flac", "--model", typed]) == 2
    assert said in capsys.readouterr().err


def test_toml_model_path_and_reload_model_take_names(home, tmp_path):
    config_file = tmp_path / "daemon.toml"
    config_file.write_text(f'[model]\npath = "tiny-a"\ndevice = "cpu"\n'
                           f'[publish]\nendpoint = "tcp://127.0.0.1:{free_port()}"\n'
                           f'[control]\nendpoint = "tcp://127.0.0.1:{free_port()}"\n')
    daemon = Daemon(load_config(config_file)).start()
    try:
        assert daemon.model.name == "tiny a"
        control = daemon.control.endpoint
        swapped = control_request(control, {"cmd": "reload_model", "path": "tiny-b"},
                                  timeout_ms=10000)
        assert swapped["ok"], swapped
        assert swapped["model"]["name"] == "tiny b"
        assert swapped["model"]["path"] == str(home / "models" / "tiny-b.pt")
        unknown = control_request(control, {"cmd": "reload_model", "path": "nope"})
        assert not unknown["ok"] and "installed: tiny-a, tiny-b" in unknown["error"]
        assert daemon.model.name == "tiny b"  # the running model stays
    finally:
        daemon.stop()


def test_daemon_config_with_a_name(home):
    config = DaemonConfig(model=ModelConfig(path="tiny-b", device="cpu"),
                          publish=PublishConfig(endpoint="tcp://127.0.0.1:*"),
                          control=ControlConfig(endpoint=""))
    daemon = Daemon(config).start()
    try:
        assert daemon.model.name == "tiny b"
    finally:
        daemon.stop()


def test_models_list_info_remove(home, capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "tiny-a" in out and "tiny a, 4 tags" in out
    assert main(["models", "info", "tiny-b"]) == 0
    out = capsys.readouterr().out
    assert "sha256" in out and "calm 0.500" in out
    assert main(["models", "remove", "tiny-b"]) == 0
    assert not (home / "models" / "tiny-b.pt").exists()
    assert main(["models", "info", "tiny-b"]) == 2
    assert "installed: tiny-a;" in capsys.readouterr().err
    assert main(["models", "remove", "tiny-b"]) == 2  # again: said, without advice to install
    err = capsys.readouterr().err
    assert "no model named 'tiny-b' is installed, so nothing was removed" in err
    assert "installed: tiny-a;" in err and "install it" not in err


# ---------------------------------------------------------------- --from is untrusted

def _wheel(path, members: dict[str, bytes]):
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize("member", ["../evil.py", "musicnn/../../evil.py", "/tmp/evil.py",
                                    "..\\evil.py", "C:/evil.py"])
def test_a_wheel_member_that_would_land_outside_its_folder_is_refused(tmp_path, member):
    wheel = _wheel(tmp_path / "musicnn-0.1.0-py3-none-any.whl",
                   {"musicnn/configuration.py": b"", member: b"print('owned')"})
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(ModelError, match="would be unpacked outside its folder"):
        musicnn_import.package_from(wheel, scratch)
    assert list(scratch.iterdir()) == []  # nothing was unpacked


def test_a_wheel_past_the_size_cap_is_refused_before_unpacking(tmp_path):
    # A member that says it unpacks to 2 GiB (a zip bomb says so too: zipfile holds each
    # member to the size it declares, so the declared sizes are what is checked).
    wheel = _wheel(tmp_path / "bomb.whl", {"musicnn/configuration.py": b"x" * 100})
    data = bytearray(wheel.read_bytes())
    central = data.index(b"PK\x01\x02")
    data[central + 24:central + 28] = (2**31).to_bytes(4, "little")  # uncompressed size
    wheel.write_bytes(bytes(data))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(ModelError, match=r"unpacks to 2 GiB, over the cap of 1 GiB"):
        musicnn_import.package_from(wheel, scratch)
    assert list(scratch.iterdir()) == []


def test_a_wheel_of_too_many_files_is_refused(tmp_path):
    wheel = _wheel(tmp_path / "many.whl", {f"musicnn/f{i}": b"" for i in range(
        installed.MAX_ARCHIVE_MEMBERS + 1)})
    with pytest.raises(ModelError, match=f"holds {installed.MAX_ARCHIVE_MEMBERS + 1} files, "
                                         f"over the cap of {installed.MAX_ARCHIVE_MEMBERS}"):
        musicnn_import.package_from(wheel, tmp_path)


def test_model_and_output_mistakes_are_named_not_tracebacks(home, tmp_path, capsys):
    model = tiny_model_file(tmp_path / "m.pt")
    other = tiny_model_file(tmp_path / "o.pt", seed=2)
    audio = tmp_path / "a.wav"
    write_audio(audio, music_like(4.0, 16000, seed=1), 16000)
    damaged = with_changed_weights(model, tmp_path / "damaged.pt")
    recipe = str(Path(__file__).resolve().parents[2] / "models" / "recipes" / "synthetic_lstm.toml")
    runs_file = tmp_path / "taken"
    runs_file.write_text("")
    for argv, said in (
            (["tag", "--model", str(damaged), str(audio)], "weights hash mismatch"),
            (["eval", str(model), recipe, "--json", str(tmp_path / "no" / "e.json")],
             "--json " + str(tmp_path / "no" / "e.json") + ": its folder does not exist"),
            (["ensemble", str(model), str(other), "--out", str(tmp_path / "no" / "e.pt")],
             "its folder does not exist"),
            (["train", recipe, "--out", str(runs_file)], "is a file; give a run folder"),
            (["train", recipe, "--set", "data.synthetic.clip_seconds=x", "--out",
              str(tmp_path / "run")], "synthetic.clip_seconds must be a number, got 'x'")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err, (argv, err)


class _CopyImporter:
    """A second family of published weights: its "conversion" copies a model file."""

    names = ("tiny-copy",)

    def __init__(self, made: Path) -> None:
        self.made = made

    def convert_all(self, names, source, scratch, log, install) -> None:
        for name in names:
            converted = scratch / f"{name}.pt"
            converted.write_bytes(self.made.read_bytes())
            install(name, converted)


def test_a_second_importer_is_one_entry_that_models_install_serves(home, tmp_path, monkeypatch):
    made = tiny_model_file(tmp_path / "made.pt", seed=3, name="tiny copy")
    monkeypatch.setattr(installed, "IMPORTERS", (*installed.IMPORTERS, _CopyImporter(made)))
    assert installed.available_names()[-1] == "tiny-copy"
    [(name, path)] = installed.install(["tiny-copy"], log=lambda text: None)
    assert (name, path) == ("tiny-copy", home / "models" / "tiny-copy.pt")
    assert installed.resolve_model("tiny-copy") == str(path)
    assert "calibration" in read_manifest(path).options  # the store gave it its thresholds
    with pytest.raises(ModelError, match="streamtag can install music, .*, tiny-copy"):
        installed.install(["tiny-other"])
