"""``streamtag models install``: musicnn's real checkpoints converted from the installed
package, a wheel, a package folder and a lone checkpoint folder; broken checkpoints refused with
the file and tensor named and the store left as it was."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from streamtag.catalog import installed
from streamtag.catalog.calibration import REAL_MUSIC_THRESHOLDS
from streamtag.catalog.musicnn import checkpoint_files, find_installed_package
from streamtag.cli import main
from streamtag.errors import ConfigError, ModelError
from streamtag.model import modelfile
from streamtag.model.manifest import read_manifest

PACKAGE = find_installed_package()
pytestmark = pytest.mark.skipif(
    PACKAGE is None, reason="needs musicnn's checkpoints: pip install --no-deps musicnn==0.1.0")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A $STREAMTAG_HOME where musicnn-msd was installed from the installed package."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(installed.HOME_ENV, str(home))
        done = installed.install(["musicnn-msd"], log=lambda text: None)
    assert done == [("musicnn-msd", home / "models" / "musicnn-msd.pt")]
    return home


@pytest.fixture
def home(store, monkeypatch):
    monkeypatch.setenv(installed.HOME_ENV, str(store))
    return store


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def package_copy(root: Path, folders=("MSD_musicnn",)) -> Path:
    """A musicnn package folder holding configuration.py and the given checkpoint folders."""
    package = root / "musicnn"
    package.mkdir(parents=True)
    shutil.copy(PACKAGE / "configuration.py", package)
    (package / "__init__.py").write_text("")
    for folder in folders:
        shutil.copytree(PACKAGE / folder, package / folder)
    return package


def test_installed_model_records_its_source_and_serves(home, capsys):
    path = home / "models" / "musicnn-msd.pt"
    manifest = read_manifest(path)
    assert manifest.name == "musicnn-msd" and len(manifest.tags) == 50
    assert {"rock", "chillout", "Mellow", "happy", "sad"} <= set(manifest.tags)
    recipe = manifest.recipe
    assert recipe["licence"] == "ISC" and "Pons" in recipe["citation"]
    assert recipe["source"] == "musicnn 0.1.0" and "last.fm" in recipe["tag_source"]
    assert recipe["checkpoint_sha256"] == {
        f"MSD_musicnn/{p.name}": sha256(p) for p in checkpoint_files(PACKAGE, "musicnn-msd")}
    # The documented default thresholds, fitted on real music for these weights, not 0.5
    # (which MSD probabilities rarely reach).
    assert manifest.options["calibration"]["audio"].startswith("real music")
    stored_table = json.loads(REAL_MUSIC_THRESHOLDS.read_text())["musicnn-msd"]
    assert list(manifest.thresholds) == pytest.approx(stored_table["thresholds"])
    assert max(manifest.thresholds) < 0.5 and min(manifest.thresholds) > 0
    modelfile.load(path, device="cpu")  # loads and its hash checks
    assert main(["models", "info", "musicnn-msd"]) == 0
    out = capsys.readouterr().out
    assert "licence: ISC" in out and "checkpoint_sha256" in out and "rock " in out
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "musicnn-msd" in out and (
        "can be installed: music (recommended), musicnn-mtt, vgg-mtt, vgg-msd") in out


@pytest.mark.parametrize("forms", [
    pytest.param(("wheel", "checkpoints"), id="wheel-and-checkpoint-folder"),
    pytest.param(("package", "site-packages"), id="package-folders",
                 marks=pytest.mark.slow)])  # 3 s an install
def test_wheel_folder_and_checkpoint_folder_give_the_same_model(home, tmp_path, monkeypatch,
                                                                forms):
    expected = read_manifest(home / "models" / "musicnn-msd.pt").weights_sha256
    package = package_copy(tmp_path / "site-packages")
    wheel = tmp_path / "musicnn-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for file in sorted(package.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(package.parent))
    sources = {"wheel": wheel, "package": package, "site-packages": package.parent,
               "checkpoints": package / "MSD_musicnn"}
    for source in (sources[form] for form in forms):
        monkeypatch.setenv(installed.HOME_ENV, str(tmp_path / f"home-{source.name}"))
        [(_, path)] = installed.install(["musicnn-msd"], source=source, log=lambda text: None)
        assert read_manifest(path).weights_sha256 == expected, source
    with pytest.raises(ModelError, match="checkpoint of musicnn-msd only"):
        installed.install(["vgg-msd"], source=package / "MSD_musicnn")


def swap_first_kernel_dims(index: Path) -> None:
    """conv2d/kernel (7, 38, 1, 204) becomes (38, 7, 1, 204) in the index (same size), with
    every block's CRC-32C made right again, so only the shape is wrong."""
    import google_crc32c

    data = bytearray(index.read_bytes())
    pattern = bytes.fromhex("1202080712020826120208011203")
    assert data.count(pattern) >= 1
    data = bytearray(bytes(data).replace(pattern, bytes.fromhex("1202082612020807120208011203")))
    # The table's blocks: the footer's index block lists the data blocks; fix every trailer.
    footer = bytes(data[-48:])

    def varint(buffer: bytes, pos: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = buffer[pos]
            value |= (byte & 0x7F) << shift
            pos, shift = pos + 1, shift + 7
            if byte < 0x80:
                return value, pos

    pos = 0
    for _ in range(2):
        _, pos = varint(footer, pos)
    index_offset, pos = varint(footer, pos)
    index_size, _ = varint(footer, pos)
    blocks = [(index_offset, index_size)]
    block = bytes(data[index_offset:index_offset + index_size])
    restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end, pos = len(block) - 4 - 4 * restarts, 0
    while pos < end:
        _, pos = varint(block, pos)
        unshared, pos = varint(block, pos)
        size, pos = varint(block, pos)
        handle = block[pos + unshared:pos + unshared + size]
        offset, hpos = varint(handle, 0)
        blocks.append((offset, varint(handle, hpos)[0]))
        pos += unshared + size
    for offset, size in blocks:
        crc = google_crc32c.value(bytes(data[offset:offset + size + 1]))
        masked = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
        struct.pack_into("<I", data, offset + size + 1, masked)
    index.write_bytes(bytes(data))


def break_truncated(folder: Path) -> None:
    data = folder / ".data-00000-of-00001"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])


def break_flipped(folder: Path) -> None:
    data = folder / ".data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    for offset in range(1000, len(raw), 1 << 16):  # one bit every 64 KiB: bit rot
        raw[offset] ^= 0x10
    data.write_bytes(bytes(raw))


def break_other_model(folder: Path) -> None:
    for name in (".index", ".data-00000-of-00001"):
        shutil.copy(PACKAGE / "MSD_vgg" / name, folder / name)


@pytest.mark.parametrize(("damage", "message"), [
    (break_truncated, r"\.data-00000-of-00001.*(truncated|short|past the end)"),
    (break_flipped, r"\.data-00000-of-00001.*tensor '[^']+'|tensor '[^']+'.*\.data-00000"),
    (break_other_model, r"MSD_musicnn/\.index lacks tensor '[^']+'"),
    (lambda folder: swap_first_kernel_dims(folder / ".index"),
     r"MSD_musicnn/\.index: tensor 'conv2d/kernel' has shape \(38, 7, 1, 204\)"),
])
def test_a_broken_checkpoint_names_file_and_tensor_and_changes_nothing(home, tmp_path, damage,
                                                                       message):
    package = package_copy(tmp_path / "site-packages")
    damage(package / "MSD_musicnn")
    before = {p.name: p.read_bytes() for p in (home / "models").iterdir()}
    with pytest.raises(ModelError, match=message):
        installed.install(["musicnn-msd"], source=package, log=lambda text: None)
    after = {p.name: p.read_bytes() for p in (home / "models").iterdir()}
    assert after == before  # the installed model as it was, no temporary file left


def test_a_broken_checkpoint_is_named_where_the_user_gave_it(home, tmp_path):
    """A lone checkpoint folder (--from FOLDER) or a wheel is read through a temporary copy:
    the error named /tmp/streamtag-install-.../package/MSD_musicnn/..., a path the user never
    gave and that is gone once the command ends."""
    lone = tmp_path / "mine" / "MSD_musicnn"
    shutil.copytree(PACKAGE / "MSD_musicnn", lone)
    break_truncated(lone)
    with pytest.raises(ModelError) as raised:
        installed.install(["musicnn-msd"], source=lone, log=lambda text: None)
    assert f"{lone}/.data-00000-of-00001" in str(raised.value)
    assert "streamtag-install-" not in str(raised.value)
    package = package_copy(tmp_path / "site-packages")
    break_truncated(package / "MSD_musicnn")
    wheel = wheel_with_metadata(tmp_path, package)
    with pytest.raises(ModelError) as raised:
        installed.install(["musicnn-msd"], source=wheel, log=lambda text: None)
    assert "streamtag-install-" not in str(raised.value)
    assert "musicnn/MSD_musicnn/.data-00000-of-00001" in str(raised.value)
    assert str(raised.value).endswith(f"(in the wheel {wheel})")


def test_a_checkpoint_past_the_size_cap_is_refused_before_it_is_read(home, tmp_path):
    # A data file of over 1 GiB (sparse: no disk is used), its tensors where the index says.
    package = package_copy(tmp_path / "site-packages")
    data = package / "MSD_musicnn" / ".data-00000-of-00001"
    with data.open("r+b") as file:
        file.truncate(installed.MAX_SOURCE_BYTES + 1)
    before = {p.name: p.read_bytes() for p in (home / "models").iterdir()}
    with pytest.raises(ModelError, match=r"over the cap of 1 GiB together .* reached at "
                                         r".*\.data-00000-of-00001"):
        installed.install(["musicnn-msd"], source=package, log=lambda text: None)
    assert {p.name: p.read_bytes() for p in (home / "models").iterdir()} == before


def test_a_wheel_whose_configuration_is_a_16_mb_list_is_refused_unparsed(home, tmp_path):
    # A 17 KB wheel whose configuration.py is a 16 MB list: parsed, it took 2 GB and ended in
    # a MemoryError. Its size is now read before a byte is parsed.
    from streamtag.catalog.musicnn import MAX_CONFIGURATION_BYTES

    package = package_copy(tmp_path / "site-packages")
    hostile = b"MSD_LABELS = [" + b"0," * (8 * 1024 * 1024) + b"]\n"
    (package / "configuration.py").write_bytes(hostile)
    wheel = tmp_path / "musicnn-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(package.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(package.parent))
    before = {p.name: p.read_bytes() for p in (home / "models").iterdir()}
    with pytest.raises(ModelError, match=rf"configuration\.py is {len(hostile)} bytes, over "
                                         rf"the {MAX_CONFIGURATION_BYTES}"):
        installed.install(["musicnn-msd"], source=wheel, log=lambda text: None)
    assert {p.name: p.read_bytes() for p in (home / "models").iterdir()} == before


def test_checkpoint_files_past_their_caps_are_refused_before_they_are_read(home, tmp_path):
    # Far below the 1 GiB that a whole package may hold, far above musicnn's (an index of
    # 5 kB, a data file of 9.5 MB); sparse files, so no disk is used.
    from streamtag.catalog.tfcheckpoint import MAX_DATA_BYTES, MAX_INDEX_BYTES

    for name, cap in ((".data-00000-of-00001", MAX_DATA_BYTES), (".index", MAX_INDEX_BYTES)):
        package = package_copy(tmp_path / name / "site-packages")
        path = package / "MSD_musicnn" / name
        with path.open("r+b") as file:
            file.truncate(cap + 1)
        with pytest.raises(ModelError, match=rf"MSD_musicnn/{re.escape(name)} is {cap + 1} "
                                             rf"bytes, over the {cap}"):
            installed.install(["musicnn-msd"], source=package, log=lambda text: None)


def test_a_failed_first_install_leaves_no_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(installed.HOME_ENV, str(tmp_path / "fresh"))
    package = package_copy(tmp_path / "site-packages")
    break_truncated(package / "MSD_musicnn")
    with pytest.raises(ModelError):
        installed.install(["musicnn-msd"], source=package, log=lambda text: None)
    assert not (tmp_path / "fresh").exists()


def test_from_errors_say_what_to_give(home, tmp_path):
    with pytest.raises(ModelError, match="no such file or folder"):
        installed.install(["musicnn-msd"], source=tmp_path / "missing.whl")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelError, match="not a wheel"):
        installed.install(["musicnn-msd"], source=tmp_path / "notes.txt")
    with pytest.raises(ModelError, match="holds no musicnn package"):
        installed.install(["musicnn-msd"], source=tmp_path)
    with pytest.raises(ModelError, match="unknown model name"):
        installed.install(["musicnn-big"])


def wheel_with_metadata(folder: Path, package: Path) -> Path:
    """musicnn's wheel as pip sees it: the package and a .dist-info naming it musicnn 0.1.0."""
    wheel = folder / "musicnn-0.1.0-py3-none-any.whl"
    info = "musicnn-0.1.0.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        for file in sorted(package.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(package.parent))
        archive.writestr(f"{info}/METADATA",
                         "Metadata-Version: 2.1\nName: musicnn\nVersion: 0.1.0\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
                                          "Tag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return wheel


def test_without_a_package_pip_downloads_it(home, tmp_path, monkeypatch, capfd):
    """No musicnn installed and no --from: pip downloads the wheel (here from a local folder
    standing in for PyPI, through pip's own --find-links) and its progress shows on stderr."""
    from streamtag.catalog import musicnn as musicnn_models

    monkeypatch.setattr(musicnn_models, "find_installed_package", lambda: None)
    index = tmp_path / "index"
    index.mkdir()
    wheel_with_metadata(index, package_copy(tmp_path / "site-packages"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    monkeypatch.setenv(installed.HOME_ENV, str(tmp_path / "home"))
    [(_, path)] = installed.install(["musicnn-msd"])
    expected = read_manifest(home / "models" / "musicnn-msd.pt").weights_sha256
    assert read_manifest(path).weights_sha256 == expected
    err = capfd.readouterr().err
    assert "downloading musicnn==0.1.0" in err and "musicnn-0.1.0-py3-none-any.whl" in err

    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nothing-here"))  # offline
    monkeypatch.setenv(installed.HOME_ENV, str(tmp_path / "home2"))
    with pytest.raises(ModelError, match=r"cannot download musicnn==0\.1\.0 .*--from "
                                         r"musicnn-0\.1\.0-py3-none-any\.whl"):
        installed.install(["musicnn-msd"])
    assert not (tmp_path / "home2").exists()


# -- thresholds on music ----------------------------------------------------------------------

def active_counts(model_path: Path, audio, sample_rate: int = 16000) -> list[int]:
    """Active tags per window of the daemon's engine (smoothing and hysteresis included)."""
    from streamtag.engine.batching import Engine, EngineSink
    from streamtag.model.inference import InferenceModel

    counts: list[int] = []

    class Sink(EngineSink):
        def on_window(self, result) -> None:
            counts.append(len(result.active))

        def on_stream_end(self, stream_id, events, end_s) -> None:
            pass

    model = InferenceModel.load(model_path, device="cpu")
    assert model.sample_rate == sample_rate
    engine = Engine(model, Sink())
    engine.add_stream("s")
    engine.accept("s", audio)
    engine.finish_stream("s")
    engine.drain()
    return counts


SINGULARITY = Path("/usr/share/games/singularity/music")  # Debian's singularity-music


def decoded_span(path: Path, start_s: int, end_s: int, rate: int = 16000) -> np.ndarray:
    """Seconds [start_s, end_s) of a recording as the file source decodes it (less where it
    ends sooner), decoding no further than end_s."""
    from streamtag.catalog.calibration import file_chunks

    chunks, have = [], 0
    reader = iter(file_chunks(path, rate))
    try:
        for chunk in reader:
            chunks.append(chunk)
            have += len(chunk)
            if have >= end_s * rate:
                break
    finally:
        reader.close()
    return np.concatenate(chunks)[start_s * rate: end_s * rate]
HELD_OUT = ("Awakening.ogg", "A New Journey.ogg", "Enemy Unknown.ogg")


@pytest.mark.skipif(not all((SINGULARITY / name).is_file() for name in HELD_OUT),
                    reason="needs real recordings: apt-get install singularity-music")
@pytest.mark.parametrize("names", [
    # 8-10 s a piece: music's held-out check covers real music by default
    pytest.param(HELD_OUT[:1], id="one-piece", marks=pytest.mark.slow),
    pytest.param(HELD_OUT, id="three-pieces", marks=pytest.mark.slow)])
def test_default_thresholds_give_few_tags_on_real_music(home, tmp_path, names):
    """On real recordings the thresholds were not fitted on (2:30 to 3:30 of the pieces; the
    fit took 0:15 to 1:00), the installed thresholds give 1 to 4 active tags on most windows,
    and fewer than the rule on synthetic music gives on each piece (4 to 5 there)."""
    from streamtag.catalog.calibration import default_calibration
    from streamtag.model import stored

    installed_model = home / "models" / "musicnn-msd.pt"
    synthetic = tmp_path / "synthetic.pt"
    stored.rewrite(installed_model, synthetic,
                   thresholds=tuple(default_calibration(installed_model)["thresholds"]))
    everything = []
    for name in names:
        audio = decoded_span(SINGULARITY / name, 150, 210)
        counts = active_counts(installed_model, audio)
        before = active_counts(synthetic, audio)
        assert len(counts) >= 50
        assert np.mean(counts) < np.mean(before) - 0.5, (name, counts, before)
        everything += counts
    in_range = sum(1 <= c <= 4 for c in everything) / len(everything)
    assert in_range >= 0.8, everything


def test_weights_without_stored_thresholds_get_the_synthetic_rule(home, tmp_path):
    """The stored real-music thresholds belong to musicnn 0.1.0's checkpoints: other weights
    under the same name (their hashes differ) get the rule on synthetic music."""
    from streamtag.catalog.calibration import install_calibration, real_music_calibration
    from streamtag.model import stored

    installed_model = home / "models" / "musicnn-msd.pt"
    assert real_music_calibration(installed_model) is not None
    manifest = read_manifest(installed_model)
    other = tmp_path / "other.pt"
    hashes = {name: "0" * 64 for name in manifest.recipe["checkpoint_sha256"]}
    stored.rewrite(installed_model, other, recipe={**manifest.recipe,
                                                   "checkpoint_sha256": hashes})
    assert real_music_calibration(other) is None
    assert install_calibration(other)["record"]["audio"].startswith("synthetic music")


def test_calibrate_sets_thresholds_from_recordings_atomically(home, tmp_path, capsys):
    from streamtag.audio.files import write_audio
    from streamtag.audio.testsignals import music_like

    path = home / "models" / "musicnn-msd.pt"
    original = path.read_bytes()
    recordings = []
    for seed in (5, 6):
        recordings.append(tmp_path / f"take{seed}.flac")
        write_audio(recordings[-1], music_like(12.0, 22050, seed=seed), 22050)
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(b"ID3" + bytes(range(256)) * 20)
    try:
        assert main(["models", "calibrate", "musicnn-msd", str(recordings[0]),
                     str(broken)]) == 2
        assert "broken.mp3" in capsys.readouterr().err
        assert path.read_bytes() == original  # a failed calibration changes nothing

        assert main(["models", "calibrate", "musicnn-msd", *map(str, recordings)]) == 0
        out = capsys.readouterr().out
        assert "windows of 2 recording(s)" in out and "have 1 to 6 active tags" in out
        manifest = modelfile.load(path, device="cpu").manifest  # hash still checks
        assert manifest.options["calibration"]["audio"] == "2 recording(s): take5.flac, " \
                                                           "take6.flac"
        assert manifest.options["calibration"]["share_1_to_6_active"] >= 0.7
        counts = active_counts(path, music_like(12.0, 16000, seed=5))
        assert sum(1 <= c <= 6 for c in counts) >= 0.7 * len(counts), counts
        assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]
    finally:
        path.write_bytes(original)  # the module's other tests keep the default thresholds


def test_demo_runs_with_the_installed_model(home):
    import io

    from streamtag.commands.demo import run_demo

    out = io.StringIO()
    assert run_demo("musicnn-msd", seconds=6.0, speed=20.0, device="cpu", out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("streamtag demo: 6 s piece, model musicnn-msd (50 tags)")
    assert any("active:" in line for line in lines)
    assert "status ended" in lines[-1]


def test_fine_tuning_starts_musicnn_from_the_installed_model(home):
    """model.init = "musicnn-msd" on a musicnn recipe for 13 tags: the body is the installed
    model's, bit for bit; the head (the last dense layer) is new."""
    import torch

    from streamtag import nets
    from streamtag.frontend import LogMelOptions
    from streamtag.train.init_from import load_body

    torch.manual_seed(0)
    model = nets.build("musicnn", 13)
    head = load_body(model, "musicnn-msd", "musicnn", {}, LogMelOptions.preset("musicnn"), 13)
    assert head == {"output.weight", "output.bias"}
    theirs = modelfile.load(home / "models" / "musicnn-msd.pt", device="cpu").module.model
    ours = model.state_dict()
    for name, tensor in theirs.state_dict().items():
        if name in head:
            assert ours[name].shape[0] == 13 and tensor.shape[0] == 50
        else:
            assert torch.equal(ours[name], tensor), name
    with pytest.raises(ConfigError, match="'musicnn' model but the recipe builds 'musicnn_vgg'"):
        load_body(nets.build("musicnn_vgg", 13), "musicnn-msd", "musicnn_vgg", {},
                  LogMelOptions.preset("musicnn"), 13)
