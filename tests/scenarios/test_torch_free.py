"""Serving without torch: every command a CPU deployment runs works where torch cannot be
imported, with the shipped model's window reuse; those that need torch say which extra to
install.

The commands run in a child interpreter whose ``torch`` is blocked (``sys.modules["torch"] =
None``: any import of it fails as if it were not installed). The container tests
(tests/container/) run the same commands in an image where it truly is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from support.helpers import free_port, run_streamtag, stop_process, wait_until
from support.servers import AudioServer, pulse_session

from streamtag.audio.files import write_audio
from streamtag.audio.testsignals import music_like
from streamtag.catalog.musicnn import find_installed_package
from streamtag.catalog.shipped import default_model_path
from streamtag.errors import ModelError
from streamtag.model import modelfile, stored
from streamtag.model.manifest import (
    MANIFEST_FILE,
    MAX_INFLATED_ENTRY_BYTES,
    Manifest,
    read_manifest,
)
from streamtag.wire.control import control_request
from streamtag.wire.subscriber import Subscriber

BLOCK = "import sys\nsys.modules['torch'] = None\n"
CLI = BLOCK + "from streamtag.cli import main\nsys.exit(main(sys.argv[1:]))\n"
RATE = 16000


def without_torch(*args: str, popen: bool = False, **kwargs):
    """``streamtag ARGS`` in an interpreter where torch cannot be imported, run from outside
    the source tree (``helpers.run_streamtag``)."""
    command = [sys.executable, "-c", CLI, *args]
    kwargs.setdefault("cwd", tempfile.gettempdir())
    kwargs.setdefault("text", True)
    if popen:
        # Its output goes to a file, not a pipe nobody reads until the end: a command that
        # logs more than a pipe holds (64 KB) would block on it.
        log = tempfile.TemporaryFile(mode="w+")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, **kwargs)
        process.log = log
        return process
    return subprocess.run(command, capture_output=True, **kwargs)


def finish(process: subprocess.Popen) -> str:
    """Stops a started command (SIGTERM) and returns what it wrote."""
    stop_process(process, 15)
    process.wait()
    if process.stdin is not None:
        process.stdin.close()
    process.log.seek(0)
    text = process.log.read()
    process.log.close()
    return text


def python_without_torch(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True,
                          cwd=tempfile.gettempdir(), timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def music(tmp_path_factory):
    folder = tmp_path_factory.mktemp("music")
    path = folder / "piece.wav"
    write_audio(path, music_like(12.0, RATE, seed=7), RATE)
    return path


def test_the_block_makes_torch_unimportable():
    done = subprocess.run([sys.executable, "-c", BLOCK + "import torch"], capture_output=True,
                          text=True, cwd=tempfile.gettempdir())
    assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr


def test_the_shipped_model_stores_what_onnx_runtime_serves():
    manifest = read_manifest(default_model_path())
    assert manifest.format_version == "1.3"
    assert manifest.window_reuse["scheme"] == "pooled_columns"
    assert list(manifest.window_reuse["hops"]) == [str(manifest.hop)]


def test_window_reuse_serves_from_the_file_without_torch():
    out = python_without_torch(
        "import json, numpy as np\n"
        "from streamtag.catalog.shipped import default_model_path\n"
        "from streamtag.model.inference import InferenceModel\n"
        "from streamtag.model.window_reuse import check_windows\n"
        "m = InferenceModel.load(default_model_path(), threads=1)\n"
        "reuse, _ = m.window_reuse(m.hop)\n"
        "w = check_windows(m.frontend.n_mels, m.window, m.hop, 8)\n"
        "d = float(np.abs(reuse.run(w) - m.forward(w)).max())\n"
        "other, why = m.window_reuse(m.hop - 1)\n"
        "print(json.dumps({'backend': m.backend, 'difference': d, 'other': other is None,\n"
        "                  'why': why, 'torch': 'torch' in sys.modules and\n"
        "                  sys.modules['torch'] is not None}))\n")
    result = json.loads(out)
    assert result["backend"] == "onnxruntime" and not result["torch"]
    assert result["difference"] <= 1e-4
    # a hop the file stores no steps for: served whole, saying what would export them
    assert result["other"] and "pip install torch" in result["why"]


def test_demo_and_tag_without_torch_give_the_torch_served_scores(music, capsys):
    from streamtag.cli import main

    demo = without_torch("demo", "--seconds", "8", "--speed", "8", timeout=120)
    assert demo.returncode == 0, demo.stderr
    assert "active:" in demo.stdout and "track" in demo.stdout
    served = without_torch("tag", str(music), "--json", timeout=120)
    assert served.returncode == 0, served.stderr
    # the reference in this process, which has torch already (a second interpreter would
    # import it again)
    capsys.readouterr()
    assert main(["tag", str(music), "--json", "--backend", "torch"]) == 0
    a, b = json.loads(served.stdout), json.loads(capsys.readouterr().out)
    assert a["error"] is None and sorted(a["mean_scores"]) == sorted(b["mean_scores"])
    tags = sorted(a["mean_scores"])
    np.testing.assert_allclose([a["mean_scores"][t] for t in tags],
                               [b["mean_scores"][t] for t in tags], atol=1e-4)
    assert [s["tag"] for s in a["segments"]] == [s["tag"] for s in b["segments"]]


def test_the_daemon_serves_file_http_and_pipe_sources_without_torch(tmp_path, music):
    station = AudioServer((music.parent / "piece.wav").read_bytes(), radio=True,
                          bytes_per_s=RATE * 2 * 2)
    station.start()
    feed, control = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    subscriber = Subscriber(feed)
    daemon = without_torch("run", "--source", f"disk=file:{music}", "--source",
                           f"radio={station.url()}", "--source", "stdin=pipe:",
                           "--publish", feed, "--control", control, popen=True,
                           stdin=subprocess.PIPE, text=False)
    heard: set[str] = set()
    try:
        pcm = (music_like(8.0, 44100, seed=3) * 0.5 * 32767).astype("<i2").tobytes()
        daemon.stdin.write(pcm)  # the pipe source's default: s16le mono 44.1 kHz
        daemon.stdin.flush()
        deadline = time.monotonic() + 90
        while heard != {"disk", "radio", "stdin"} and time.monotonic() < deadline:
            message = subscriber.recv(200)
            if message is not None and message.msg_type == "scores":
                heard.add(message.stream)
            assert daemon.poll() is None, finish(daemon)
        assert heard == {"disk", "radio", "stdin"}
        status = control_request(control, {"cmd": "status"}, timeout_ms=10000)
        assert status["model"]["backend"] == "onnxruntime"
        assert status["engine"]["reused_windows"] > 0  # from the steps the file stores
    finally:
        errors = finish(daemon)
        station.stop()
        subscriber.close()
    assert daemon.returncode == 0, errors


def test_proxy_record_history_and_dashboard_without_torch(tmp_path, music):
    upstream, backend = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    frontend = f"tcp://127.0.0.1:{free_port()}"
    db = f"sqlite:///{tmp_path / 'tags.db'}"
    port = free_port()
    # The file plays in real time and loops: read at full speed it could be over before the
    # recorder, started beside the daemon, has subscribed (nothing would ever be recorded).
    config = tmp_path / "streamtag.toml"
    config.write_text(f'[[sources]]\nid = "disk"\nspec = "file:{music}"\nrealtime = true\n'
                      'loop = true\n')
    processes = [
        without_torch("run", "--config", str(config), "--publish", upstream, "--control", "",
                      popen=True),
        without_torch("proxy", "--upstream", upstream, "--frontend", frontend, "--backend",
                      backend, popen=True),
        without_torch("record", "--connect", backend, "--db", db, popen=True),
    ]
    try:
        wait_until((tmp_path / "tags.db").exists, 60, "the recorder's database")
        processes.append(without_torch("dashboard", "--connect", backend, "--port", str(port),
                                       "--db", db, popen=True))
        def page() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as answer:
                    return answer.status == 200
            except OSError:
                return False

        wait_until(page, 60, "the dashboard page")
        listened = without_torch("listen", backend, "--json", "--count", "5", timeout=90)
        assert listened.returncode == 0, listened.stderr
        kinds = {json.loads(line)["header"]["msg_type"] for line in listened.stdout.splitlines()}
        assert kinds & {"scores", "event", "status", "heartbeat"}

        def recorded() -> bool:
            done = without_torch("history", "--db", db, "--json", timeout=60)
            return done.returncode == 0 and "disk" in done.stdout

        wait_until(recorded, 90, "the recorder's rows", interval=1.0)
    finally:
        errors = [finish(process) for process in reversed(processes)]
    assert all(p.returncode == 0 for p in processes), errors


def test_calibration_without_torch_writes_a_file_torch_still_loads(tmp_path, music):
    home = tmp_path / "home"
    path = home / "models" / "mine.pt"  # an installed model, as `models calibrate` takes
    path.parent.mkdir(parents=True)
    shutil.copy(default_model_path(), path)
    before = read_manifest(path)
    done = without_torch("models", "calibrate", "mine", str(music), timeout=300,
                         env={**os.environ, "STREAMTAG_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    after = read_manifest(path)
    assert after.thresholds != before.thresholds and "calibration" in after.options
    assert (after.weights_sha256, after.onnx, after.window_reuse) == \
        (before.weights_sha256, before.onnx, before.window_reuse)
    loaded = modelfile.load(path, device="cpu")  # TorchScript reads it; the weights hash holds
    x = modelfile.example_input(after)
    original = modelfile.load(default_model_path(), device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), original(x), atol=0, rtol=0)
    with zipfile.ZipFile(path) as a, zipfile.ZipFile(default_model_path()) as b:
        assert sorted(a.namelist()) == sorted(b.namelist())


def test_models_list_names_what_can_be_installed_without_torch(tmp_path):
    from streamtag.catalog import installed, music_small, musicnn

    assert installed.available_names() == (installed.RECOMMENDED, *musicnn.NAMES,
                                           music_small.NAME)
    done = without_torch("models", "list", env={**os.environ, "STREAMTAG_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert ("can be installed: music (recommended), musicnn-mtt, musicnn-msd, vgg-mtt, "
            "vgg-msd, music-small, speech") in done.stdout


def test_commands_that_need_torch_name_the_extra(tmp_path, music):
    # adding a TorchScript module to a file (of a model installed without torch) needs torch
    install = without_torch("models", "complete", str(default_model_path()), timeout=120)
    assert install.returncode == 2 and "pip install torch" in install.stderr
    assert "PyTorch's CPU wheel index" in install.stderr
    served = without_torch("tag", str(music), "--backend", "torch", timeout=120)
    assert served.returncode == 2 and "pip install torch" in served.stderr
    assert "Traceback" not in install.stderr + served.stderr


def test_the_daemon_serves_a_sound_card_without_torch(monkeypatch):
    feed = f"tcp://127.0.0.1:{free_port()}"
    with pulse_session(monkeypatch, music=True):  # 30 s of music into the captured sink
        subscriber = Subscriber(feed)
        daemon = without_torch("run", "--source", "room=device:pulse", "--publish", feed,
                               "--control", "", popen=True)
        scores = 0
        try:
            deadline = time.monotonic() + 60
            while scores < 3 and time.monotonic() < deadline:
                message = subscriber.recv(200)
                if message is not None and message.msg_type == "scores":
                    assert message.header.stream == "room"
                    scores += 1
                assert daemon.poll() is None, finish(daemon)
        finally:
            errors = finish(daemon)
            subscriber.close()
    assert scores == 3, errors


def test_a_plot_without_matplotlib_names_the_plot_extra(tmp_path):
    db = f"sqlite:///{tmp_path / 'tags.db'}"
    created = without_torch("record", "--db", db, "--upgrade", timeout=60)
    assert created.returncode == 0, created.stderr
    code = ("import sys\nsys.modules['torch'] = sys.modules['matplotlib'] = None\n"
            "from streamtag.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    done = subprocess.run([sys.executable, "-c", code, "history", "--db", db, "--plot",
                           str(tmp_path / "day.png")], capture_output=True, text=True,
                          cwd=tempfile.gettempdir(), timeout=60)
    assert done.returncode == 2 and "pip install matplotlib" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "day.png").exists()
    report = without_torch("history", "--db", db, timeout=60)  # the text report needs none
    assert report.returncode == 0, report.stderr


@pytest.mark.parametrize("record, named", [
    ({"scheme": 3, "hops": {}}, "scheme name"),
    ({"scheme": "pooled_columns", "hops": ["31"]}, "scheme name"),
    ({"scheme": "pooled_columns", "hops": {"x1": {}}}, "'x1' is not a hop"),
    ({"scheme": "pooled_columns", "hops": {"²": {}}}, "is not a hop"),
    ({"scheme": "pooled_columns", "hops": {"31": {"first": {}}}}, "first and next"),
    ({"scheme": "pooled_columns", "hops": {"31": "reuse.onnx"}}, "first and next"),
])
def test_a_forged_window_reuse_record_is_refused_when_the_manifest_is_read(record, named):
    data = read_manifest(default_model_path()).to_dict()
    with pytest.raises(ModelError, match="window_reuse") as error:
        Manifest.from_dict({**data, "window_reuse": record})
    assert named in str(error.value)



def bombed(tmp_path, in_manifest: bool):
    """The shipped model with a deflated entry that would inflate to 20 MB: its manifest, or a
    code record beside the real ones."""
    bomb = b" " * (MAX_INFLATED_ENTRY_BYTES + (4 << 20))
    path = tmp_path / ("manifest-bomb.pt" if in_manifest else "code-bomb.pt")
    with zipfile.ZipFile(default_model_path()) as old, zipfile.ZipFile(path, "w") as new:
        for info in old.infolist():
            if in_manifest and info.filename.endswith("/extra/" + MANIFEST_FILE):
                new.writestr(info.filename, bomb, zipfile.ZIP_DEFLATED)
            else:
                new.writestr(info, old.read(info))
        if not in_manifest:
            new.writestr("model/code/bomb.py", bomb, zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 4 << 20  # the file is small; the entry is not
    return path


def test_an_entry_that_inflates_past_the_bound_is_refused_unread(tmp_path):
    with pytest.raises(ModelError, match="streamtag.json inflates to .* more than"):
        read_manifest(bombed(tmp_path, in_manifest=True))
    path = bombed(tmp_path, in_manifest=False)
    thresholds = read_manifest(path).thresholds  # the manifest itself is fine
    with pytest.raises(ModelError, match="bomb.py inflates to .* more than"):
        stored.rewrite(path, tmp_path / "out.pt", thresholds=thresholds)
    assert not (tmp_path / "out.pt").exists()


# -- real tags without torch: musicnn's taggers installed as their ONNX graph ---------------------

MUSICNN = find_installed_package()
NEEDS_MUSICNN = pytest.mark.skipif(
    MUSICNN is None, reason="needs musicnn's checkpoints: pip install --no-deps musicnn==0.1.0")
SINGULARITY = Path("/usr/share/games/singularity/music")  # Debian's singularity-music
PIECE = SINGULARITY / "Awakening.ogg"


@pytest.fixture(scope="module")
def torch_free_home(tmp_path_factory):
    """A $STREAMTAG_HOME where musicnn-msd and music were installed without torch."""
    home = tmp_path_factory.mktemp("torch-free")
    done = without_torch("models", "install", "musicnn-msd", "music", timeout=300,
                         env={**os.environ, "STREAMTAG_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    assert "written as the ONNX graph" in done.stderr
    return home


def install_with_torch(home: Path, name: str) -> Path:
    from streamtag.catalog import installed

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(installed.HOME_ENV, str(home))
        installed.install([name], log=lambda text: None)
    return home


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """A $STREAMTAG_HOME where musicnn-msd was installed with torch, as before."""
    return install_with_torch(tmp_path_factory.mktemp("with-torch"), "musicnn-msd")


def forward(path: Path, windows: np.ndarray, backend: str = "onnxruntime"):
    from streamtag.model.inference import InferenceModel

    model = InferenceModel.load(path, device="cpu", backend=backend, threads=1)
    return model, model.forward(windows)


@NEEDS_MUSICNN
@pytest.mark.parametrize("name", ["musicnn-msd", *(pytest.param(name, marks=pytest.mark.slow)
                                                   for name in ("music", "vgg-msd"))])
def test_installed_without_torch_serves_what_the_torch_made_file_serves(torch_free_home,
                                                                        torch_home, name,
                                                                        tmp_path):
    path = torch_free_home / "models" / f"{name}.pt"
    if name != "musicnn-msd":  # 25 s more with torch
        torch_home = install_with_torch(tmp_path, name)
    if not path.exists():
        done = without_torch("models", "install", name, timeout=300,
                             env={**os.environ, "STREAMTAG_HOME": str(tmp_path / "free")})
        assert done.returncode == 0, done.stderr
        path = tmp_path / "free" / "models" / f"{name}.pt"
    reference = torch_home / "models" / f"{name}.pt"
    made, full = read_manifest(path), read_manifest(reference)
    assert made.format_version == "1.4" and not made.torchscript and full.torchscript
    # the same weights (their hash as the TorchScript module's), tags, thresholds fitted on
    # real music, recipe and contract
    assert made.weights_sha256 == full.weights_sha256
    assert made.options["calibration"]["audio"].startswith("real music")
    for field in ("tags", "thresholds", "recipe", "architecture", "options", "frontend",
                  "window", "hop", "input_kind"):
        assert getattr(made, field) == getattr(full, field), field
    assert made.window_reuse["scheme"] == full.window_reuse["scheme"]
    assert list(made.window_reuse["hops"]) == list(full.window_reuse["hops"]) == ["62"]
    with zipfile.ZipFile(path) as archive:  # the manifest and the graphs, nothing of torch's
        assert sorted(n.split("/", 1)[1] for n in archive.namelist()) == [
            "extra/model.onnx", "extra/reuse.hop62.first.onnx", "extra/reuse.hop62.next.onnx",
            "extra/streamtag.json"]
    windows = np.random.default_rng(3).standard_normal((6, 96, 187), dtype=np.float32) * 4
    served, probabilities = forward(path, windows)
    reference_served, expected = forward(reference, windows)
    np.testing.assert_allclose(probabilities, expected, atol=1e-4, rtol=0)
    # the daemon's rewrites (the Winograd ones of musicnn's long filters among them) apply
    assert served.graph_passes == reference_served.graph_passes
    assert any("Winograd" in p for p in served.graph_passes)
    assert made.onnx["exporter"].startswith("streamtag.catalog.onnx_build")
    _, torchscript = forward(reference, windows, backend="torch")
    np.testing.assert_allclose(probabilities, torchscript, atol=1e-4, rtol=0)
    # overlapping windows from the steps the file stores: the torch-made file's whole windows
    from streamtag.model.window_reuse import check_windows

    reuse, why = served.window_reuse(made.hop)
    assert reuse is not None, why
    run = check_windows(made.frontend.n_mels, made.window, made.hop, 6)
    np.testing.assert_allclose(reuse.run(run), reference_served.forward(run), atol=1e-4, rtol=0)


@NEEDS_MUSICNN
@pytest.mark.skipif(not PIECE.is_file(), reason="needs real recordings: apt-get install "
                                                "singularity-music")
@pytest.mark.slow  # 7 s; the probabilities' parity is checked by default on musicnn-msd
def test_tag_without_torch_gives_the_torch_made_files_tags_on_real_music(torch_free_home,
                                                                         torch_home, tmp_path):
    from streamtag.catalog.calibration import file_chunks

    audio = []
    for chunk in file_chunks(PIECE, RATE):  # 25 s of a real piece, from 1:00
        audio.append(chunk)
        if sum(map(len, audio)) >= 85 * RATE:
            break
    excerpt = tmp_path / "excerpt.wav"
    write_audio(excerpt, np.concatenate(audio)[60 * RATE:85 * RATE], RATE)
    served = without_torch("tag", str(excerpt), "--model", "musicnn-msd", "--json", timeout=300,
                           env={**os.environ, "STREAMTAG_HOME": str(torch_free_home)})
    assert served.returncode == 0, served.stderr
    reference = run_streamtag("tag", str(excerpt), "--model",
                              str(torch_home / "models" / "musicnn-msd.pt"), "--json",
                              timeout=300)
    assert reference.returncode == 0, reference.stderr
    a, b = json.loads(served.stdout), json.loads(reference.stdout)
    assert a["error"] is None and a["windows"] == b["windows"] and a["segments"]
    assert [(s["tag"], s["start_s"], s["end_s"]) for s in a["segments"]] == \
        [(s["tag"], s["start_s"], s["end_s"]) for s in b["segments"]]
    tags = sorted(b["mean_scores"])
    assert sorted(a["mean_scores"]) == tags
    np.testing.assert_allclose([a["mean_scores"][t] for t in tags],
                               [b["mean_scores"][t] for t in tags], atol=1e-4)


@NEEDS_MUSICNN
def test_what_needs_the_module_says_so_and_names_models_complete(torch_free_home, music):
    from streamtag.cli import main
    from streamtag.model.inference import InferenceModel

    env = {**os.environ, "STREAMTAG_HOME": str(torch_free_home)}
    path = torch_free_home / "models" / "musicnn-msd.pt"
    for attempt in (lambda: modelfile.load(path, device="cpu"),
                    lambda: InferenceModel.load(path, device="cpu", backend="torch")):
        with pytest.raises(ModelError, match="`streamtag models complete musicnn-msd`"):
            attempt()
    served = without_torch("tag", str(music), "--model", "musicnn-msd", "--backend", "torch",
                           timeout=120, env=env)
    assert served.returncode == 2 and "streamtag models complete musicnn-msd" in served.stderr
    assert "Traceback" not in served.stderr
    info = without_torch("models", "info", "musicnn-msd", timeout=60, env=env)
    assert info.returncode == 0, info.stderr
    assert "module:      none" in info.stdout and "models complete musicnn-msd" in info.stdout
    done = without_torch("models", "complete", "musicnn-msd", timeout=60, env=env)
    assert done.returncode == 2 and "pip install torch" in done.stderr
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STREAMTAG_HOME", str(torch_free_home))
        assert main(["models", "complete", str(path.parent / "absent.pt")]) == 2


@NEEDS_MUSICNN
def test_models_complete_adds_the_module_install_with_torch_writes(torch_free_home, torch_home,
                                                                   tmp_path, monkeypatch,
                                                                   capsys):
    from streamtag.cli import main

    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    path = home / "models" / "musicnn-msd.pt"
    shutil.copy(torch_free_home / "models" / "musicnn-msd.pt", path)
    monkeypatch.setenv("STREAMTAG_HOME", str(home))
    before = read_manifest(path)
    assert main(["models", "complete", "musicnn-msd"]) == 0
    after, full = read_manifest(path), read_manifest(torch_home / "models" / "musicnn-msd.pt")
    assert after.torchscript and after.format_version == "1.4"
    assert (after.weights_sha256, after.thresholds, after.options, after.recipe) == \
        (before.weights_sha256, before.thresholds, before.options, before.recipe)
    assert after.window_reuse == full.window_reuse  # window reuse's steps, as with torch
    loaded = modelfile.load(path, device="cpu")
    x = modelfile.example_input(after)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), modelfile.load(
            torch_home / "models" / "musicnn-msd.pt", device="cpu")(x), atol=1e-6, rtol=0)
    capsys.readouterr()
    assert main(["models", "complete", "musicnn-msd"]) == 2
    assert "already has its TorchScript module" in capsys.readouterr().err


@NEEDS_MUSICNN
@pytest.mark.slow  # 5 s: every musicnn model has thresholds fitted on real music
def test_weights_without_stored_thresholds_get_the_synthetic_rule_without_torch(
        torch_free_home, tmp_path):
    """The real-music thresholds belong to musicnn 0.1.0's checkpoints; other weights get the
    rule on synthetic music, scored by ONNX Runtime without torch. And window reuse at a hop
    the file stores no steps for names the command that adds the module."""
    path = torch_free_home / "models" / "musicnn-msd.pt"
    out = python_without_torch(
        "import json\n"
        "from streamtag.catalog.calibration import install_calibration\n"
        "from streamtag.model import stored\n"
        "from streamtag.model.inference import InferenceModel\n"
        f"path, other = {str(path)!r}, {str(tmp_path / 'other.pt')!r}\n"
        "m = stored.open_model(path).manifest\n"
        "hashes = {k: '0' * 64 for k in m.recipe['checkpoint_sha256']}\n"
        "stored.rewrite(path, other, recipe={**m.recipe, 'checkpoint_sha256': hashes})\n"
        "done = install_calibration(other)\n"
        "model = InferenceModel.load(path, device='cpu', threads=1)\n"
        "reuse, why = model.window_reuse(m.hop - 1)\n"
        "print(json.dumps({'audio': done['record']['audio'], 'n': len(done['thresholds']),\n"
        "                  'stored': model.window_reuse(m.hop)[0] is not None,\n"
        "                  'other': reuse is None, 'why': why}))\n")
    result = json.loads(out)
    assert result["audio"].startswith("synthetic music") and result["n"] == 50
    assert result["stored"] and result["other"]
    assert "streamtag models complete musicnn-msd" in result["why"]
