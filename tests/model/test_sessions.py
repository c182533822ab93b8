"""The two backends: ONNX Runtime on the graph every model file carries, frozen TorchScript.

Real model files written by streamtag.model.modelfile, real ONNX Runtime sessions, the daemon
end to end on a real audio file over real ZeroMQ sockets.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zipfile

import numpy as np
import pytest
import torch
from support.helpers import free_port, run_streamtag, tiny_model_file, wait_until
from torch import nn

from streamtag import nets
from streamtag.audio.testsignals import music_like
from streamtag.catalog.shipped import default_model_path
from streamtag.daemon.config import (
    ControlConfig,
    DaemonConfig,
    EngineConfig,
    ModelConfig,
    PublishConfig,
    SourceConfig,
    with_overrides,
)
from streamtag.daemon.daemon import Daemon
from streamtag.engine.batching import Engine, EngineSink
from streamtag.engine.smoothing import SmoothingConfig
from streamtag.errors import ConfigError
from streamtag.frontend import LogMelOptions
from streamtag.model import modelfile
from streamtag.model.inference import InferenceModel, cheapest_batch
from streamtag.model.manifest import MANIFEST_FILE, ONNX_FILE, read_manifest
from streamtag.model.sessions import onnx_session
from streamtag.wire.control import control_request
from streamtag.wire.subscriber import Subscriber
from tests.nets.test_nets import SMALL

N_TAGS = 6
# vqvae is the autoencoder the vqvae_* taggers are pre-trained from: it does not tag.
TAGGERS = sorted(name for name in SMALL if name != "vqvae")
# 5-20 s each on 2 shared cores (TorchScript alone takes seconds to load them): pytest -m slow
HEAVY = {"vggish", "mobilenet", "mobilenet_attn", "shake_fa_resnet",
         # 3-5 s each; left to -m slow to keep the default run short
         "fa_resnet", "samplecnn", "cp_resnet"}


pytestmark = pytest.mark.usefixtures("one_torch_thread", "own_cache")


def _manifest(shape: tuple[int, ...], name: str) -> dict:
    frontend = LogMelOptions.preset("musicnn")
    if len(shape) == 2:
        frontend = frontend.replace(n_mels=shape[0])
    return {"name": name, "tags": [f"t{i}" for i in range(N_TAGS)],
            "input_kind": "logmel" if len(shape) == 2 else "waveform", "frontend": frontend,
            "window": shape[-1], "hop": max(1, shape[-1] // 2)}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n
                                  for n in TAGGERS])
def test_the_onnx_graph_in_every_zoo_model_file_equals_torchscript(name, tmp_path):
    options, shape = SMALL[name]
    torch.manual_seed(0)
    path = tmp_path / f"{name}.pt"
    manifest = modelfile.save(nets.build(name, N_TAGS, **options), path, _manifest(shape, name))
    assert manifest.onnx["file"] == ONNX_FILE, manifest.onnx
    with zipfile.ZipFile(path) as archive:  # the graph is inside the one model file
        assert any(n.endswith(f"/extra/{ONNX_FILE}") for n in archive.namelist())
    loaded = modelfile.load(path, device="cpu")  # TorchScript loads big graphs slowly: once
    served = InferenceModel(loaded, backend="onnxruntime")
    frozen = InferenceModel(loaded, backend="torch")
    assert (served.backend, frozen.backend) == ("onnxruntime", "torch")
    rng = np.random.default_rng(1)
    for batch in (1, 8):
        x = rng.standard_normal(served.input_shape(batch), dtype=np.float32)
        expected = loaded(x).numpy()  # the file's TorchScript module as loaded
        np.testing.assert_allclose(served.forward(x), expected, atol=1e-4, rtol=0)
        np.testing.assert_allclose(frozen.forward(x), expected, atol=1e-4, rtol=0)


class SpectralTagger(nn.Module):
    """Scripts, but uses an FFT, which ONNX's opset 17 exporter cannot express."""

    def __init__(self, n_mels: int, n_tags: int) -> None:
        super().__init__()
        self.out = nn.Linear(n_mels, n_tags)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.fft.rfft(x, dim=2).abs().mean(dim=2))


def test_a_model_that_cannot_export_serves_through_torchscript_and_says_why(tmp_path, caplog):
    path = tmp_path / "spectral.pt"
    manifest = modelfile.save(SpectralTagger(96, N_TAGS), path, _manifest((96, 32), "spectral"))
    assert "fft_rfft" in manifest.onnx["error"]  # recorded in the file
    with caplog.at_level(logging.WARNING, logger="streamtag.model.inference"):
        model = InferenceModel.load(path, device="cpu")  # auto: ONNX Runtime wanted
    assert model.backend == "torch"
    assert "fft_rfft" in model.backend_note
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "streamtag.model.inference" and "fft_rfft" in r.getMessage()]
    assert len(warnings) == 1 and "TorchScript serves it" in warnings[0]
    config = DaemonConfig(
        model=ModelConfig(path=str(path), device="cpu"),
        publish=PublishConfig(endpoint=f"tcp://127.0.0.1:{free_port()}"),
        control=ControlConfig(endpoint=f"tcp://127.0.0.1:{free_port()}"))
    daemon = Daemon(config).start()
    try:
        reply = control_request(daemon.control.endpoint, {"cmd": "status"})
    finally:
        daemon.stop()
    assert reply["ok"], reply
    assert reply["model"]["backend"] == "torch"
    assert "fft_rfft" in reply["model"]["backend_note"]
    # max_batch left out: measured on the CPU, and status says what and at what sizes
    measured = daemon.engine.model.batch_ms
    assert 1 in measured and all(ms > 0 for ms in measured.values())
    assert {int(b) for b in reply["model"]["batch_ms"]} == set(measured)
    assert reply["model"]["max_batch"] == cheapest_batch(measured)


def test_onnxruntime_scores_a_window_the_same_in_batches_of_any_size_one_after_another():
    # The engine's batches change size from one forward to the next; the session plans no
    # memory pattern per size (it mapped fresh pages for each), and its reused buffers must
    # not carry one batch's values into the next.
    loaded = modelfile.load(default_model_path(), device="cpu")
    session = onnx_session(modelfile.onnx_graph(loaded), threads=1)
    assert session.get_session_options().enable_mem_pattern is False
    model = InferenceModel(loaded, backend="onnxruntime", threads=1)
    assert model.backend == "onnxruntime"
    windows = np.random.default_rng(3).standard_normal(model.input_shape(8), dtype=np.float32)
    alone = np.concatenate([model.forward(windows[i:i + 1]) for i in range(8)])
    for size in (8, 3, 1, 5, 8, 2):
        start = size % 4
        got = model.forward(windows[start:start + size])
        np.testing.assert_allclose(got, alone[start:start + size], rtol=0, atol=1e-5)


def test_onnxruntime_on_cuda_and_unknown_backends_are_refused():
    with pytest.raises(ConfigError, match="engine.backend must be one of auto, torch"):
        EngineConfig(backend="tensorrt")
    with pytest.raises(ConfigError, match="--backend"):
        with_overrides(DaemonConfig(), backend="onnx")
    config = with_overrides(DaemonConfig(), backend="torch", hop_seconds=0.5)
    assert (config.engine.backend, config.engine.hop_seconds) == ("torch", 0.5)


def _as_format_1_0(source, out) -> None:
    """The file as streamtag wrote it before 1.1: the same module, no ONNX graph inside."""
    extra = {MANIFEST_FILE: ""}
    module = torch.jit.load(str(source), _extra_files=extra)
    data = json.loads(extra[MANIFEST_FILE])
    del data["onnx"]
    data["format_version"] = "1.0"
    torch.jit.save(module, str(out), _extra_files={MANIFEST_FILE: json.dumps(data)})


def _published(model_path, song, backend: str, tmp_path, device: str = "cpu"
               ) -> tuple[list, dict]:
    """Every scores and event message the daemon publishes for the song, and its status."""
    config = DaemonConfig(
        model=ModelConfig(path=str(model_path), device=device),
        publish=PublishConfig(endpoint=f"tcp://127.0.0.1:{free_port()}", heartbeat_s=0.1),
        control=ControlConfig(endpoint=f"tcp://127.0.0.1:{free_port()}",
                              file_roots=(str(song.parent),)),
        smoothing=SmoothingConfig(time_constant_s=0, margin=0, min_on_s=0, min_off_s=0),
        engine=EngineConfig(max_wait_ms=5, backend=backend))
    daemon = Daemon(config).start()
    sub = Subscriber(daemon.publisher.endpoint)
    got = []
    try:
        wait_until(lambda: (m := sub.recv(100)) is not None and m.header.msg_type == "heartbeat",
                   10, "a heartbeat")
        daemon.add_source(SourceConfig("song", f"file:{song}"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            msg = sub.recv(200)
            if msg is None or msg.header.stream != "song":
                continue
            got.append(msg)
            if msg.header.msg_type == "status" and msg.body.state in ("ended", "failed"):
                break
        status = control_request(daemon.control.endpoint, {"cmd": "status"})
    finally:
        daemon.stop()
        sub.close()
    assert got and got[-1].body.state == "ended", got[-1:]
    return got, status


def test_the_daemon_publishes_the_same_with_either_backend_and_serves_older_files(song,
                                                                                   tmp_path):
    default = default_model_path()
    by_torch, status_torch = _published(default, song, "torch", tmp_path)
    by_ort, status_ort = _published(default, song, "onnxruntime", tmp_path)
    older = tmp_path / "older.pt"
    _as_format_1_0(default, older)
    by_older, status_older = _published(older, song, "auto", tmp_path)
    assert [s["model"]["backend"] for s in (status_torch, status_ort, status_older)] == [
        "torch", "onnxruntime", "onnxruntime"]
    # ONNX Runtime serves the default model's graph rewritten (its four pools taken first,
    # its four batch norms folded into the next layer, its three 3x3 convolutions of 32 or 64
    # channels in along the rows, its first ReLU computed in its first convolution)
    assert status_torch["model"]["graph_passes"] == []
    assert status_ort["model"]["graph_passes"] == status_older["model"]["graph_passes"] == [
        "max pools taken before their ReLU and batch norm: 4",
        "batch norms folded into the layer after them: 4",
        "3x3 convolutions computed as Winograd F(m, 3) along the rows: 3",
        "ReLUs before a max pool computed in the convolution: 1"]
    # the older file's graph was exported at load and kept in the cache, by weights hash
    cached = tmp_path / "cache" / "streamtag" / "onnx" / (
        read_manifest(default).weights_sha256 + ".onnx")
    assert cached.is_file()

    reference = published_scores(by_torch)
    assert len(reference) >= 10
    for other in (by_ort, by_older):
        np.testing.assert_allclose(published_scores(other), reference, atol=1e-4, rtol=0)
        assert published_events(other) == published_events(by_torch)
    assert published_events(by_torch), "the song switches no tag on: the check would be empty"


def published_scores(messages) -> np.ndarray:
    """The raw probabilities of every scores message, in order."""
    return np.array([m.body.raw for m in messages if m.header.msg_type == "scores"])


def published_events(messages) -> list[tuple]:
    return [(m.body.tag, m.body.state, m.body.sample) for m in messages
            if m.header.msg_type == "event"]


class Collect(EngineSink):
    def __init__(self) -> None:
        self.windows: dict[str, list] = {}
        self.lock = threading.Lock()

    def on_window(self, result) -> None:
        with self.lock:
            self.windows.setdefault(result.stream_id, []).append(result)

    def on_stream_end(self, stream_id, events, end_s) -> None:
        pass


class Uneven(InferenceModel):
    """The real model, with forward passes that take uneven times (as batches of different
    sizes, or a preempted worker, do), so later batches often finish first."""

    def forward(self, windows: np.ndarray) -> np.ndarray:
        time.sleep(float(np.random.default_rng().uniform(0, 0.004)))
        return super().forward(windows)


def test_several_workers_hand_each_stream_its_windows_in_order(tmp_path):
    model = Uneven.load(tiny_model_file(tmp_path / "tiny.pt"), device="cpu")
    signals = {f"s{i}": music_like(4.0, model.sample_rate, seed=20 + i) for i in range(6)}

    def run(config: EngineConfig) -> dict[str, list]:
        sink = Collect()
        engine = Engine(model, sink, config)
        engine.start()
        feeders = []
        for sid, signal in signals.items():
            engine.add_stream(sid)
            feeders.append(threading.Thread(target=_feed, args=(engine, sid, signal)))
        for t in feeders:
            t.start()
        for t in feeders:
            t.join()
        engine.stop()
        return sink.windows

    one = run(EngineConfig(max_batch=1, workers=1))
    # small batches, three workers: many batches in flight at once, finishing in any order
    three = run(EngineConfig(max_batch=2, max_wait_ms=0, workers=3))
    for sid in signals:
        assert [r.index for r in three[sid]] == list(range(len(one[sid])))
        np.testing.assert_allclose([r.raw for r in three[sid]], [r.raw for r in one[sid]],
                                   atol=1e-5, rtol=0)


def _feed(engine: Engine, stream_id: str, signal: np.ndarray) -> None:
    for i in range(0, len(signal), 1600):
        engine.accept(stream_id, signal[i: i + 1600])
    engine.finish_stream(stream_id)


def tagged_mean_scores(song, *flags: str) -> dict[str, float]:
    """``streamtag tag --json FLAGS SONG``'s mean score per tag."""
    done = run_streamtag("tag", "--json", *flags, str(song), timeout=180)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["mean_scores"]


def test_tag_with_either_backend_flag_gives_the_same_scores(song):
    by_torch = tagged_mean_scores(song, "--backend", "torch")
    by_ort = tagged_mean_scores(song, "--backend", "onnxruntime")
    assert by_torch.keys() == by_ort.keys()
    for tag, score in by_torch.items():
        assert abs(score - by_ort[tag]) <= 1e-4, tag
    done = run_streamtag("tag", "--backend", "tensorrt", str(song))
    assert done.returncode == 2 and "invalid choice: 'tensorrt'" in done.stderr
