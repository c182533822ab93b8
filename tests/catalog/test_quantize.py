"""`streamtag models quantize` and `precision = "int8"`: an int8 graph made on recordings,
measured against FP32, stored in the model file, served by ONNX Runtime, and refused clearly
where it cannot serve."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from support.helpers import (
    collect,
    make_config,
    run_streamtag,
    started,
    tiny_model_file,
    with_changed_weights,
)
from torch import nn

from streamtag.audio.files import write_audio
from streamtag.audio.testsignals import music_like
from streamtag.catalog.quantize import MIN_WINDOWS, quantize_file
from streamtag.cli import main
from streamtag.daemon.config import EngineConfig, SourceConfig
from streamtag.engine.batching import cut_windows
from streamtag.errors import ConfigError, ModelError
from streamtag.frontend import LogMelOptions
from streamtag.model import modelfile
from streamtag.model.inference import InferenceModel
from streamtag.model.manifest import FORMAT_VERSION, INT8_FILE, read_manifest
from streamtag.wire.control import control_request

TAGS = ("calm", "loud", "percussive", "bright")
# Quantization error allowed in a probability: int8 weights (7 bits) and uint8 activations give
# ~1e-3 on these models; a broken graph (wrong scales, saturated sums) gives tenths.
INT8_TOLERANCE = 0.02


class ConvTagger(nn.Module):
    """Two 2-D convolutions over (mel, frame), a pool, a mean and a linear layer."""

    def __init__(self, n_tags: int, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.out = nn.Linear(32, n_tags)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(x.unsqueeze(1) / 20.0))
        h = torch.relu(self.conv2(nn.functional.max_pool2d(h, 2)))
        return self.out(h.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quantize")
    path = folder / "conv.pt"
    modelfile.save(ConvTagger(len(TAGS)), path, {
        "name": "conv", "tags": list(TAGS), "input_kind": "logmel",
        "frontend": LogMelOptions.preset("musicnn"), "window": 64, "hop": 32,
        "architecture": {"name": "conv"}})
    recordings = []
    for seed in (1, 2):
        recordings.append(folder / f"piece{seed}.flac")
        write_audio(recordings[-1], music_like(12.0, 44100, seed=seed), 44100)
    quantized = folder / "conv-int8.pt"
    assert main(["models", "quantize", str(path), *map(str, recordings), "-o",
                 str(quantized)]) == 0
    return path, recordings, quantized


def test_quantize_stores_an_int8_graph_measured_on_windows_it_was_not_calibrated_on(files,
                                                                                    capsys):
    path, recordings, quantized = files
    before, after = read_manifest(path), read_manifest(quantized)
    assert before.onnx_int8 == {}  # -o: the original is left as it was
    assert after.format_version == FORMAT_VERSION == "1.4"
    assert after.onnx == before.onnx  # the FP32 graph is kept, byte for byte (its hash)
    assert after.weights_sha256 == before.weights_sha256
    record = after.onnx_int8
    model = InferenceModel.load(path, backend="onnxruntime")
    windows = [w for r in recordings for w in cut_windows(model, _chunks(r, model))]
    # every other window calibrates, the others check
    assert record["calibration_windows"] == (len(windows) + 1) // 2
    assert record["check_windows"] == len(windows) // 2
    assert 0 < record["max_difference"] <= INT8_TOLERANCE
    assert 0 < record["mean_difference"] <= record["max_difference"]
    assert 0 <= record["decisions_agree"] <= 1
    assert record["forward_ms"]["fp32"] > 0 and record["forward_ms"]["int8"] > 0
    assert "quantize_static" in record["quantizer"] and "piece1.flac" in record["recordings"]
    graph = modelfile.stored_int8_graph(modelfile.load(quantized, device="cpu"))
    assert record["file"] == INT8_FILE and graph is not None
    import onnx

    ops = {node.op_type for node in onnx.load_from_string(graph).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops


def _chunks(path, model):
    from streamtag.catalog.calibration import file_chunks

    return file_chunks(path, model.sample_rate)


def test_int8_serves_close_to_fp32_and_status_says_so(files):
    path, recordings, quantized = files
    fp32 = InferenceModel.load(quantized, backend="onnxruntime")
    int8 = InferenceModel.load(quantized, precision="int8")
    assert (fp32.precision, int8.precision) == ("fp32", "int8")
    assert int8.backend == "onnxruntime"
    windows = np.stack(list(cut_windows(fp32, _chunks(recordings[1], fp32))))
    got, expected = int8.forward(windows), fp32.forward(windows)
    assert got.shape == expected.shape == (len(windows), len(TAGS))
    assert np.abs(got - expected).max() <= INT8_TOLERANCE
    assert not np.array_equal(got, expected)  # it is the int8 graph that served


def _published(model_path, recording, tmp_path, precision: str):
    config = make_config(model_path, tmp_path,
                         engine=EngineConfig(max_wait_ms=5, precision=precision))
    daemon, sub = started(config)
    try:
        daemon.add_source(SourceConfig("piece", f"file:{recording}"))
        got = collect(sub, {"piece"})
        status = control_request(daemon.control.endpoint, {"cmd": "status"})
    finally:
        daemon.stop()
        sub.close()
    scores = np.array([m.body.raw for m in got if m.header.msg_type == "scores"])
    return scores, status


def test_the_daemon_serves_int8_when_asked_and_status_says_so(files, tmp_path):
    _, recordings, quantized = files
    fp32, status_fp32 = _published(quantized, recordings[1], tmp_path, "fp32")
    int8, status_int8 = _published(quantized, recordings[1], tmp_path, "int8")
    assert status_fp32["model"]["precision"] == "fp32"
    assert status_int8["model"]["precision"] == "int8"
    assert status_int8["model"]["backend"] == "onnxruntime"
    assert fp32.shape == int8.shape and len(fp32) > 5
    assert np.abs(int8 - fp32).max() <= INT8_TOLERANCE
    assert not np.array_equal(int8, fp32)


def test_streamtag_tag_with_int8_gives_the_fp32_scores_within_the_tolerance(files):
    _, recordings, quantized = files
    results = {}
    for precision in ("fp32", "int8"):
        done = run_streamtag("tag", "--model", str(quantized), "--precision", precision,
                             "--json", str(recordings[0]))
        assert done.returncode == 0, done.stderr
        results[precision] = json.loads(done.stdout.splitlines()[0])
    for tag in TAGS:
        assert results["int8"]["mean_scores"][tag] == pytest.approx(
            results["fp32"]["mean_scores"][tag], abs=INT8_TOLERANCE)


def test_int8_is_refused_where_it_cannot_serve(files, tmp_path):
    path, _, quantized = files
    with pytest.raises(ModelError, match="has no int8 graph; make one with `streamtag models "
                                         "quantize"):
        InferenceModel.load(path, precision="int8")
    with pytest.raises(ModelError, match="precision int8 runs on ONNX Runtime on the CPU"):
        InferenceModel.load(quantized, precision="int8", backend="torch")
    with pytest.raises(ConfigError, match="set engine.backend to auto or onnxruntime"):
        EngineConfig(precision="int8", backend="torch")
    with pytest.raises(ConfigError, match="engine.precision must be one of fp32, int8"):
        EngineConfig(precision="fp16")
    done = run_streamtag("tag", "--model", str(path), "--precision", "int8", str(path))
    assert done.returncode == 2 and "streamtag models quantize" in done.stderr


def test_rewriting_the_manifest_or_the_fp32_graph_keeps_the_int8_graph(files, tmp_path):
    _, _, quantized = files
    rethresholded, reexported = tmp_path / "rethresholded.pt", tmp_path / "reexported.pt"
    modelfile.rewrite(quantized, rethresholded, thresholds=(0.3, 0.4, 0.5, 0.6))
    modelfile.add_onnx_graph(quantized, reexported)
    a, b, c = (modelfile.load(p, device="cpu") for p in (quantized, rethresholded, reexported))
    assert modelfile.stored_int8_graph(a) is not None
    assert modelfile.stored_int8_graph(b) == modelfile.stored_int8_graph(c) == \
        modelfile.stored_int8_graph(a)
    assert b.manifest.onnx_int8 == c.manifest.onnx_int8 == a.manifest.onnx_int8
    assert b.manifest.thresholds == (0.3, 0.4, 0.5, 0.6)


def test_quantize_refuses_short_or_unreadable_recordings_and_leaves_the_file(files, tmp_path,
                                                                             capsys):
    path, recordings, _ = files
    target = tmp_path / "model.pt"
    target.write_bytes(path.read_bytes())
    short = tmp_path / "short.flac"
    write_audio(short, music_like(1.0, 44100, seed=3), 44100)
    with pytest.raises(ModelError, match=f"quantizing needs at least {MIN_WINDOWS}"):
        quantize_file(target, [short])
    missing = tmp_path / "missing.flac"
    assert main(["models", "quantize", str(target), str(recordings[0]), str(missing)]) == 2
    assert "missing.flac" in capsys.readouterr().err
    assert target.read_bytes() == path.read_bytes()


def test_quantize_refuses_a_file_whose_torchscript_weights_were_changed(tmp_path, capsys):
    # Its ONNX graph, the part quantized, is intact; the TorchScript weights the file keeps
    # beside it were changed after it was saved. The file was written with the int8 graph
    # added, for a later load to refuse.
    changed = with_changed_weights(tiny_model_file(tmp_path / "tiny.pt"), tmp_path / "changed.pt")
    before = changed.read_bytes()
    piece = tmp_path / "piece.flac"
    write_audio(piece, music_like(6.0, 44100, seed=4), 44100)
    assert main(["models", "quantize", str(changed), str(piece)]) == 2
    err = capsys.readouterr().err
    assert "weights hash mismatch" in err and "changed or damaged" in err, err
    assert changed.read_bytes() == before


def test_the_command_says_whether_int8_pays_from_the_times_it_recorded(tmp_path, capsys):
    """Whether int8 pays depends on the model and the CPU: the command says which, from the
    times it measured and wrote into the file."""
    path = tiny_model_file(tmp_path / "tiny.pt")
    piece = tmp_path / "piece.flac"
    write_audio(piece, music_like(6.0, 44100, seed=4), 44100)
    assert main(["models", "quantize", str(path), str(piece)]) == 0
    out = capsys.readouterr().out
    record = read_manifest(path).onnx_int8
    pays = record["forward_ms"]["int8"] < record["forward_ms"]["fp32"]
    assert ("serve it with --precision int8" in out) == pays
    assert ("keep precision fp32" in out) == (not pays)
