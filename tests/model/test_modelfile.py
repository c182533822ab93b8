"""The model file: save/load round trip, every way a file can be broken, ensembles, waveform
export, devices."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from streamtag.audio.testsignals import music_like
from streamtag.errors import ModelError
from streamtag.frontend import LogMelOptions, compute_logmel
from streamtag.model import modelfile
from streamtag.model.manifest import FORMAT_VERSION, MANIFEST_FILE, Manifest, read_manifest

# TorchScript is how streamtag ships models; recent torch warns on every jit call.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

OPTIONS = LogMelOptions(sample_rate=8000.0, n_fft=256, hop_length=128, n_mels=16, fmax=4000.0)
TAGS = ("rock", "calm", "piano")
WINDOW, HOP = 20, 10


class TinyTagger(nn.Module):
    """Logits (batch, tags) from log-mel windows (batch, n_mels, frames)."""

    def __init__(self, n_mels: int = OPTIONS.n_mels, n_tags: int = len(TAGS)) -> None:
        super().__init__()
        self.conv = nn.Conv1d(n_mels, 8, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, n_tags)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm(self.conv(x)))
        return self.head(h.mean(dim=2))


class NotScriptable(nn.Module):
    def forward(self, x):
        return torch.from_numpy(np.asarray(x.numpy() * 2))  # numpy inside: not TorchScript


def tiny(seed: int) -> TinyTagger:
    torch.manual_seed(seed)
    model = TinyTagger()
    with torch.no_grad():  # running statistics that are not the defaults
        model.norm.running_mean.uniform_(-1, 1)
        model.norm.running_var.uniform_(0.5, 2)
    return model


def manifest_fields(**changes) -> dict:
    fields = {"name": "tiny", "tags": list(TAGS), "input_kind": "logmel", "frontend": OPTIONS,
              "window": WINDOW, "hop": HOP, "thresholds": [0.3, 0.5, 0.7],
              "architecture": {"name": "tiny_tagger", "channels": 8},
              "options": {"dropout": 0.0}, "metrics": {"roc_auc_macro": np.float64(0.81)},
              "recipe": {"epochs": 3}}
    fields.update(changes)
    return fields


@pytest.fixture
def saved(tmp_path):
    model = tiny(0)
    path = tmp_path / "tiny.pt"
    modelfile.save(model, path, manifest_fields())
    return model, path


def windows(batch: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, OPTIONS.n_mels, WINDOW, generator=torch.Generator().manual_seed(seed))


def test_round_trip_gives_the_eager_probabilities_and_the_manifest(saved):
    model, path = saved
    assert model.training  # save() left the caller's module alone
    loaded = modelfile.load(path, device="cpu")
    x = windows()
    with torch.no_grad():
        expected = torch.sigmoid(model.eval()(x))
    got = loaded(x)
    assert got.shape == (4, len(TAGS))
    assert (got - expected).abs().max().item() <= 1e-6
    m = loaded.manifest
    assert (m.name, m.tags, m.input_kind, m.window, m.hop) == ("tiny", TAGS, "logmel", 20, 10)
    assert (loaded.tags, loaded.window, loaded.hop, loaded.input_kind) == (TAGS, 20, 10, "logmel")
    assert loaded.frontend_options == OPTIONS and loaded.device == torch.device("cpu")
    assert loaded.thresholds.dtype == np.float32
    np.testing.assert_array_equal(loaded.thresholds, np.float32([0.3, 0.5, 0.7]))
    assert m.metrics == {"roc_auc_macro": 0.81} and m.recipe == {"epochs": 3}
    assert m.architecture["name"] == "tiny_tagger" and m.format_version == FORMAT_VERSION
    assert m.created.endswith("+00:00") and len(m.weights_sha256) == 64
    assert not loaded.module.training and isinstance(loaded.module, torch.jit.ScriptModule)


def test_the_hash_is_the_networks_state_and_the_json_is_plain(saved):
    model, path = saved
    manifest = read_manifest(path)
    assert manifest.weights_sha256 == modelfile.weights_sha256(model)
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("/extra/" + MANIFEST_FILE))
        data = json.loads(archive.read(name))
    assert set(data) >= {"format_version", "name", "architecture", "options", "tags",
                         "input_kind", "frontend", "window", "hop", "thresholds", "metrics",
                         "recipe", "created", "weights_sha256"}
    assert data["frontend"] == OPTIONS.to_dict()
    assert Manifest.from_dict(data) == manifest
    other = tiny(0)
    with torch.no_grad():
        other.head.bias[0] += 1e-3
    assert modelfile.weights_sha256(other) != manifest.weights_sha256


def test_default_thresholds_and_unknown_keys_from_a_later_minor_version():
    m = Manifest(**manifest_fields(thresholds=None))
    assert m.thresholds == (0.5, 0.5, 0.5)
    data = m.to_dict() | {"format_version": "1.7", "calibration": {"kind": "platt"}}
    again = Manifest.from_dict(data)
    assert again.tags == TAGS and again.format_version == "1.7"


@pytest.mark.parametrize("changes, message", [
    ({"tags": []}, "must not be empty"),
    ({"tags": ["a", "b", "a"], "thresholds": None}, "unique"),
    ({"thresholds": [0.5, 0.5]}, "thresholds count"),
    ({"thresholds": [0.5, 0.5, 1.5]}, r"\[0, 1\]"),
    ({"input_kind": "spectrogram"}, "input_kind"),
    ({"window": 0}, "window"),
    ({"hop": -1}, "hop"),
    ({"frontend": {"n_mels": 16, "sr": 8000}}, "sr"),
    ({"format_version": "2.0"}, "upgrade"),
    ({"format_version": "one"}, "MAJOR.MINOR"),
])
def test_invalid_manifests_name_the_field(changes, message):
    with pytest.raises(ModelError, match=message):
        Manifest(**manifest_fields(**changes))


def test_a_model_that_cannot_be_scripted_is_named(tmp_path):
    with pytest.raises(ModelError, match="NotScriptable.*cannot be scripted"):
        modelfile.save(NotScriptable(), tmp_path / "x.pt", manifest_fields())
    assert not (tmp_path / "x.pt").exists()


def test_a_model_with_the_wrong_number_of_outputs_is_refused(tmp_path):
    with pytest.raises(ModelError, match="3 tags"):
        modelfile.save(TinyTagger(n_tags=5), tmp_path / "x.pt", manifest_fields())
    with pytest.raises(ModelError, match="unknown manifest field"):
        modelfile.save(TinyTagger(), tmp_path / "x.pt", manifest_fields(tagz=["a"]))
    assert list(tmp_path.iterdir()) == []  # nothing, not even a temporary file, is left


def rewrite_manifest(source, target, edit) -> None:
    """A copy of a model file whose streamtag.json went through edit(dict) -> dict."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            data = old.read(item)
            if item.filename.endswith("/extra/" + MANIFEST_FILE):
                data = json.dumps(edit(json.loads(data))).encode()
            new.writestr(item, data)


def test_missing_truncated_and_foreign_files_are_model_errors(saved, tmp_path):
    _, path = saved
    with pytest.raises(ModelError, match="does not exist"):
        modelfile.load(tmp_path / "nope.pt")
    truncated = tmp_path / "truncated.pt"
    content = path.read_bytes()
    truncated.write_bytes(content[: len(content) // 2])
    with pytest.raises(ModelError, match=r"truncated\.pt is truncated or damaged"):
        modelfile.load(truncated)
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(ModelError, match=r"noise\.pt is not a TorchScript model file"):
        modelfile.load(noise)
    plain_zip = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain_zip, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ModelError, match=r"plain\.zip has no streamtag\.json"):
        modelfile.load(plain_zip)
    bare = tmp_path / "bare.pt"
    torch.jit.save(torch.jit.script(tiny(0)), bare)  # TorchScript, but no manifest
    with pytest.raises(ModelError, match=r"bare\.pt has no streamtag\.json"):
        modelfile.load(bare)
    fake = tmp_path / "fake.pt"
    with zipfile.ZipFile(path) as old, zipfile.ZipFile(fake, "w") as new:
        manifest = next(n for n in old.namelist() if n.endswith(MANIFEST_FILE))
        new.writestr(manifest, old.read(manifest))  # a manifest and no module
    with pytest.raises(ModelError, match=r"fake\.pt is not a loadable TorchScript module"):
        modelfile.load(fake)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d | {"format_version": "2.0"},
     r"format version 2\.0 cannot be read: this streamtag reads model files of format 1\.x.*"
     "upgrade streamtag"),
    (lambda d: d | {"thresholds": [0.5]}, r"thresholds count \(1\) does not match tags count"),
    (lambda d: {k: v for k, v in d.items() if k != "tags"}, r"lacks the field\(s\) \['tags'\]"),
    (lambda d: d | {"weights_sha256": "0" * 64}, "weights hash mismatch"),
    (lambda d: d | {"frontend": d["frontend"] | {"n_mels": 0}}, "frontend options: n_mels"),
    (lambda d: d | {"input_kind": "mfcc"}, "input_kind must be one of"),
])
def test_bad_manifests_are_model_errors_naming_file_and_reason(saved, tmp_path, edit, message):
    _, path = saved
    broken = tmp_path / "broken.pt"
    rewrite_manifest(path, broken, edit)
    with pytest.raises(ModelError, match=r"broken\.pt.*" + message):
        modelfile.load(broken)


def test_invalid_json_and_changed_weights(saved, tmp_path):
    _, path = saved
    bad_json = tmp_path / "bad_json.pt"
    with zipfile.ZipFile(path) as old, zipfile.ZipFile(bad_json, "w") as new:
        for item in old.infolist():
            is_manifest = item.filename.endswith(MANIFEST_FILE)
            new.writestr(item, b"{not json" if is_manifest else old.read(item))
    with pytest.raises(ModelError, match=r"bad_json\.pt: streamtag\.json is not valid JSON"):
        modelfile.load(bad_json)
    # Other weights under the first file's manifest, as if the weights had been swapped.
    changed = tmp_path / "changed.pt"
    modelfile.save(tiny(1), changed, manifest_fields())
    original = read_manifest(path).weights_sha256
    rewrite_manifest(changed, tmp_path / "lying.pt", lambda d: d | {"weights_sha256": original})
    with pytest.raises(ModelError, match=r"lying\.pt: weights hash mismatch"):
        modelfile.load(tmp_path / "lying.pt")


def test_devices(saved):
    _, path = saved
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert modelfile.load(path).device.type == expected  # "auto"
    assert modelfile.load(path, torch.device("cpu")).device == torch.device("cpu")
    with pytest.raises(ModelError, match="unknown device 'tpu'"):
        modelfile.load(path, "tpu")
    if torch.cuda.is_available():
        loaded = modelfile.load(path, "cuda:0")
        assert next(loaded.module.parameters()).is_cuda
        assert loaded(windows()).is_cuda
    else:
        with pytest.raises(ModelError, match=r"tiny\.pt on 'cuda'.*CUDA is not available"):
            modelfile.load(path, "cuda")
        with pytest.raises(ModelError, match="CUDA is not available"):
            modelfile.load(path, "cuda:1")


def test_call_checks_the_input_layout(saved):
    _, path = saved
    loaded = modelfile.load(path, "cpu")
    with pytest.raises(ValueError, match=r"\(batch, 16, frames\)"):
        loaded(torch.zeros(2, WINDOW, OPTIONS.n_mels))
    assert loaded(np.zeros((1, OPTIONS.n_mels, WINDOW))).shape == (1, 3)  # numpy is accepted


def save_members(tmp_path, count: int = 3) -> list:
    paths = []
    for i in range(count):
        path = tmp_path / f"member{i}.pt"
        thresholds = [0.2 + 0.1 * i, 0.5, 0.6]
        modelfile.save(tiny(10 + i), path,
                       manifest_fields(name=f"member{i}", thresholds=thresholds))
        paths.append(path)
    return paths


def test_ensemble_is_the_mean_of_the_members(tmp_path):
    paths = save_members(tmp_path)
    out = tmp_path / "ensemble.pt"
    manifest = modelfile.save_ensemble(paths, out, name="trio")
    ensemble = modelfile.load(out, "cpu")
    members = [modelfile.load(p, "cpu") for p in paths]
    x = windows(5, seed=3)
    expected = torch.stack([m(x) for m in members]).mean(0)
    assert (ensemble(x) - expected).abs().max().item() <= 1e-6
    assert manifest == ensemble.manifest and ensemble.name == "trio"
    assert manifest.thresholds == pytest.approx((0.3, 0.5, 0.6), abs=1e-12)
    assert [m["name"] for m in manifest.members] == ["member0", "member1", "member2"]
    assert [m["weights_sha256"] for m in manifest.members] == [
        m.manifest.weights_sha256 for m in members]
    assert (ensemble.tags, ensemble.window, ensemble.hop) == (TAGS, WINDOW, HOP)


def test_ensemble_refuses_members_that_disagree(tmp_path):
    paths = save_members(tmp_path, 1)
    other_tags = tmp_path / "other_tags.pt"
    modelfile.save(tiny(5), other_tags, manifest_fields(tags=["rock", "calm", "sad"]))
    # the files named in the order of their values: the first member's, then the other's
    with pytest.raises(ModelError, match=r"member0\.pt with .*other_tags\.pt: they differ in "
                                         r"tags \(3 vs 3; not in both: 'piano', 'sad'\)"):
        modelfile.save_ensemble([paths[0], other_tags], tmp_path / "e.pt")
    unlike = tmp_path / "unlike.pt"
    modelfile.save(tiny(5), unlike, manifest_fields(tags=["a", "b", "c"]))
    with pytest.raises(ModelError, match=r"not in both: 'a', 'b', 'c', 'calm', 'piano' and 1 "
                                         r"more\)"):
        modelfile.save_ensemble([paths[0], unlike], tmp_path / "e.pt")
    reordered = tmp_path / "reordered.pt"
    modelfile.save(tiny(5), reordered, manifest_fields(tags=["calm", "rock", "piano"]))
    with pytest.raises(ModelError, match="different order"):
        modelfile.save_ensemble([paths[0], reordered], tmp_path / "e.pt")
    other_frontend = tmp_path / "other_frontend.pt"
    modelfile.save(tiny(5), other_frontend,
                   manifest_fields(frontend=OPTIONS.replace(log="log1p")))
    with pytest.raises(ModelError, match=r"frontend option log \('db' vs 'log1p'\)"):
        modelfile.save_ensemble([paths[0], other_frontend], tmp_path / "e.pt")
    other_window = tmp_path / "other_window.pt"
    modelfile.save(tiny(5), other_window, manifest_fields(window=30))
    with pytest.raises(ModelError, match=r"window \(20 vs 30\)"):
        modelfile.save_ensemble([paths[0], other_window], tmp_path / "e.pt")
    with pytest.raises(ModelError, match="at least one"):
        modelfile.save_ensemble([], tmp_path / "e.pt")
    assert not (tmp_path / "e.pt").exists()


def test_waveform_export_gives_the_log_mel_models_probabilities(saved, tmp_path):
    _, path = saved
    out = tmp_path / "waveform.pt"
    manifest = modelfile.export_waveform(path, out)
    logmel = modelfile.load(path, "cpu")
    waveform = modelfile.load(out, "cpu")
    window_samples = OPTIONS.n_fft + (WINDOW - 1) * OPTIONS.hop_length
    assert (manifest.input_kind, manifest.window, manifest.hop) == (
        "waveform", window_samples, HOP * OPTIONS.hop_length)
    assert waveform.frontend_options == OPTIONS.replace(center=False)
    assert waveform.frontend_options.sample_rate == OPTIONS.sample_rate
    assert manifest.members[0]["weights_sha256"] == logmel.manifest.weights_sha256
    # Consecutive windows of one signal, hop apart, as the daemon would cut them.
    y = music_like(2.0, OPTIONS.sample_rate, seed=7)
    starts = range(0, len(y) - window_samples + 1, manifest.hop)
    samples = np.stack([y[s: s + window_samples] for s in starts])
    frames = compute_logmel(y, OPTIONS.replace(center=False))
    step = HOP
    logmel_windows = np.stack([frames[i * step: i * step + WINDOW].T for i in range(len(starts))])
    assert len(starts) >= 5
    got = waveform(samples)
    expected = logmel(logmel_windows)
    assert got.shape == expected.shape == (len(starts), len(TAGS))
    assert (got - expected).abs().max().item() <= 1e-4
    with pytest.raises(ModelError, match="already takes a waveform"):
        modelfile.export_waveform(out, tmp_path / "again.pt")


def test_a_network_scripted_beforehand_is_accepted(tmp_path):
    model = tiny(2).eval()
    path = tmp_path / "prescripted.pt"
    manifest = modelfile.save(torch.jit.script(model), path, manifest_fields())
    assert manifest.weights_sha256 == modelfile.weights_sha256(model)
    x = windows()
    with torch.no_grad():
        expected = torch.sigmoid(model(x))
    assert (modelfile.load(path, "cpu")(x) - expected).abs().max().item() <= 1e-6
