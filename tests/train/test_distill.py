"""Distillation: a tiny student learns a teacher's scores on a few seconds of generated audio
(``data.kind = "distill"``) and is exported as a model file with the teacher's tags; the
teacher's features and scores are cached by its own frontend options and weights; the corpus
script's split keeps every package in one part."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from streamtag.frontend import LogMelOptions
from streamtag.model import modelfile
from streamtag.train.distill import load_distill, teacher_windows
from streamtag.train.recipe import parse_recipe
from streamtag.train.run import train

pytest.importorskip("av", reason="the clips are written and decoded with PyAV")

ROOT = Path(__file__).resolve().parents[2]
RATE = 16000
TAGS = ("low", "mid", "high")
TEACHER_OPTIONS = LogMelOptions.preset("musicnn").replace(n_mels=24)
TEACHER_WINDOW = 32


class BandTeacher(nn.Module):
    """Says which third of the spectrum is loudest: logits of each band's mean against the
    window's mean."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bands = x.mean(dim=2).reshape(x.shape[0], 3, -1).mean(dim=2)
        return 8.0 * (bands - bands.mean(dim=1, keepdim=True))


def _teacher(path: Path) -> Path:
    modelfile.save(BandTeacher(), path, {
        "name": "band-teacher", "tags": list(TAGS), "input_kind": "logmel",
        "frontend": TEACHER_OPTIONS, "window": TEACHER_WINDOW, "hop": 16,
        "thresholds": [0.5, 0.5, 0.5], "architecture": {"name": "band_teacher"}})
    return path


def _clip(kind: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(1.2 * RATE)) / RATE
    frequency = (150.0, 1200.0, 5500.0)[kind] * (1 + 0.1 * rng.random())
    return (0.3 * np.sin(2 * np.pi * frequency * t)
            + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def _corpus(root: Path) -> Path:
    from streamtag.audio.files import write_audio

    lines = ["path,split,source"]
    for i in range(18):
        # every band in each split: the teacher's tags have both classes there
        split = "validation" if i in (3, 8, 13) else "test" if i in (4, 9, 14) else "train"
        rel = f"clips/pkg{i % 6}/{i:02d}.flac"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        write_audio(root / rel, _clip(i % 3, i), RATE)
        lines.append(f"{rel},{split},pkg{i % 6}")
    (root / "corpus.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "corpus.csv"


def test_teacher_windows_cover_a_track_and_pad_a_short_one() -> None:
    frames = np.arange(50 * 4, dtype=np.float32).reshape(50, 4)
    windows = teacher_windows(frames, 32, 16, -1.0)
    assert windows.shape == (3, 4, 32)
    assert windows[0, 0, 0] == 0 and windows[-1, 0, -1] == frames[-1, 0]
    short = teacher_windows(frames[:10], 32, 16, -1.0)
    assert short.shape == (1, 4, 32) and (short[0, :, 10:] == -1.0).all()


def test_scores_are_the_teacher_s_cached_by_its_options_and_weights(tmp_path: Path) -> None:
    teacher = _teacher(tmp_path / "teacher.pt")
    csv_path = _corpus(tmp_path / "corpus")
    cache = tmp_path / "cache"

    data = load_distill(csv_path, str(teacher), cache, workers=1, log=lambda _: None)

    assert data.tags == list(TAGS)
    train = data.split("train")
    soft = data.labels(train)
    assert soft.shape == (len(train), 3) and 0 < soft.min() and soft.max() < 1
    # each clip's loudest band is the teacher's highest score
    kinds = [int(Path(t.id).name) % 3 for t in train]
    assert (soft.argmax(axis=1) == kinds).all()
    hard = data.labels(data.split("test"))
    assert set(np.unique(hard)) == {0.0, 1.0}
    # the teacher's features under its own options' key, its scores under its weights
    from streamtag.train.cache import options_key

    assert (cache / "features" / options_key(TEACHER_OPTIONS)).is_dir()
    assert len(list((cache / "teacher").glob("*/*.npy"))) == 18
    again = load_distill(csv_path, str(teacher), cache, workers=1, log=lambda _: None)
    assert np.array_equal(again.labels(train), soft)


RECIPE = """
name = "tiny-student"
[data]
kind = "distill"
root = "{root}"
teacher = "{teacher}"
[frontend]
preset = "musicnn"
n_mels = 24
n_fft = 1024
hop_length = 512
[model]
architecture = "lstm"
window = 16
hop = 8
[model.options]
units = 8
filters = 8
[train]
epochs = 3
batch_size = 8
lr = 1e-2
device = "cpu"
workers = 1
cache_dir = "{cache}"
patience = 0
"""


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """A tiny student trained once on the generated corpus, read by the tests below: its
    recipe, the trainer's result and its run folder."""
    root = tmp_path_factory.mktemp("distill")
    teacher = _teacher(root / "teacher.pt")
    _corpus(root / "corpus")
    # music-small's way of choosing thresholds
    recipe = parse_recipe(RECIPE.format(root=root / "corpus", teacher=teacher,
                                        cache=root / "cache"),
                          ["eval.threshold_method=prevalence"])
    return recipe, train(recipe, root / "run", echo=False), root / "run"


def test_a_student_trained_on_the_teacher_s_scores_is_a_model_file_with_its_tags(
        student) -> None:
    recipe, result, run = student

    loaded = modelfile.load(result.model_path, device="cpu")
    assert loaded.tags == TAGS and len(loaded.thresholds) == 3
    # each tag the teacher turns on in some validation clips and not all is on in as many of
    # them by the thresholds chosen, which the file carries (as float32, as the network scores)
    saved = np.load(run / "predictions.npz")
    teacher_on = saved["validation_labels"].sum(axis=0)
    student_on = (saved["validation_scores"] >= saved["thresholds"]).sum(axis=0)
    both = (teacher_on > 0) & (teacher_on < len(saved["validation_labels"]))
    assert both.any() and (student_on[both] == teacher_on[both]).all()
    assert np.asarray(loaded.thresholds) == pytest.approx(saved["thresholds"], rel=1e-6)
    # the student's own frontend, not the teacher's
    assert loaded.frontend_options == recipe.frontend_options() != TEACHER_OPTIONS
    assert result.metrics["n_examples"] == 3  # the held-out clips, scored against the teacher
    assert 0.0 <= result.metrics["roc_auc_macro"] <= 1.0


def test_the_benchmark_measures_agreement_on_the_fitted_clips_as_on_the_held_out(
        student) -> None:
    bench = _benchmark("music_small")
    recipe, _, run = student

    held_out = bench.agreement(run, recipe)
    fitted = bench.agreement(run, recipe, split="train")
    validation = bench.agreement(run, recipe, split="validation")

    # the corpus's 12 fit clips and 3 of each held-out split, each scored by the model file
    assert (fitted["clips"], held_out["clips"], validation["clips"]) == (12, 3, 3)
    assert (fitted["split"], held_out["split"]) == ("train", "test")
    assert fitted["sources"] == [f"pkg{i}" for i in range(6)]
    # the model file's scores of the test clips are the run's saved ones
    saved = np.load(run / "predictions.npz")
    _, scores = bench.student_scores(run, recipe, ["corpus.csv"])
    assert scores == pytest.approx(saved["test_scores"], abs=1e-5)
    assert 0.0 <= fitted["roc_auc_macro"] <= 1.0


def test_logit_mse_weighs_a_rare_tag_s_small_scores_as_cross_entropy_does_not() -> None:
    from streamtag.train.metrics import training_loss

    teacher = torch.tensor([[0.01, 0.5]])
    # the student's logits equal to the teacher's: no loss, and none from clipping's far end
    assert float(training_loss(torch.logit(teacher), teacher, "logit_mse")) < 1e-10
    assert np.isfinite(float(training_loss(torch.zeros(1, 2), torch.tensor([[0.0, 1.0]]),
                                           "logit_mse")))
    # a rare tag scored 0.05 where the teacher says 0.01, against 0.5 where it says 0.6:
    # cross-entropy pulls the first less than the second; the logits' difference more
    for kind, rare_pulls_harder in (("bce", False), ("logit_mse", True)):
        logits = torch.logit(torch.tensor([[0.05, 0.5]])).requires_grad_()
        training_loss(logits, torch.tensor([[0.01, 0.6]]), kind).backward()
        rare, common = logits.grad.abs()[0].tolist()
        assert (rare > common) is rare_pulls_harder, (kind, rare, common)


@pytest.mark.parametrize("loss", [
    ["train.loss=logit_mse"],                                  # the teacher's logits
    ["train.loss=threshold_bce", "train.temperature=0.5"],     # centred on its thresholds
], ids=["logit_mse", "threshold_bce"])
def test_a_student_fitted_to_the_teacher_s_logits_agrees_with_it(tmp_path: Path,
                                                                 loss: list[str]) -> None:
    teacher = _teacher(tmp_path / "teacher.pt")
    _corpus(tmp_path / "corpus")
    recipe = parse_recipe(RECIPE.format(root=tmp_path / "corpus", teacher=teacher,
                                        cache=tmp_path / "cache"),
                          [*loss, "train.epochs=15", "train.early_stopping=loss"])

    result = train(recipe, tmp_path / "run", echo=False)

    saved = np.load(tmp_path / "run" / "predictions.npz")
    kinds = [int(Path(str(i)).name) % 3 for i in saved["test_ids"]]
    # each held-out clip's loudest band is the student's highest score, as it is the teacher's
    assert saved["test_scores"].argmax(axis=1).tolist() == kinds
    assert result.metrics["roc_auc_macro"] == 1.0


def test_threshold_bce_pulls_hardest_where_the_teacher_decides() -> None:
    from streamtag.train.metrics import training_loss

    thresholds = torch.tensor([0.15, 0.15])
    teacher = torch.tensor([[0.2, 0.9]])
    # the student's logits equal to the teacher's: the least loss there is (the targets' own
    # entropy), at any temperature, and no pull
    for temperature in (1.0, 0.5):
        logits = torch.logit(teacher).requires_grad_()
        training_loss(logits, teacher, "threshold_bce", thresholds, temperature).backward()
        assert logits.grad.abs().max() < 1e-7
    # 0.1 where the teacher says 0.2 (across its threshold of 0.15), against 0.8 where it says
    # 0.9 (far above): cross-entropy pulls both alike; centred on the threshold, the first
    # harder, and harder yet at a lower temperature
    ratios = {}
    for kind, temperature in (("bce", 1.0), ("threshold_bce", 1.0), ("threshold_bce", 0.5)):
        logits = torch.logit(torch.tensor([[0.1, 0.8]])).requires_grad_()
        training_loss(logits, teacher, kind, thresholds, temperature).backward()
        across, above = logits.grad.abs()[0].tolist()
        ratios[kind, temperature] = across / above
    assert ratios["bce", 1.0] == pytest.approx(1.0)
    assert 1.0 < ratios["threshold_bce", 1.0] < ratios["threshold_bce", 0.5]


def test_a_temperature_without_threshold_bce_is_refused(tmp_path: Path) -> None:
    from streamtag.errors import ConfigError

    recipe = RECIPE.format(root=tmp_path, teacher=tmp_path / "teacher.pt", cache=tmp_path)
    with pytest.raises(ConfigError, match=r"train\.temperature = 0\.5 only shapes train\.loss = "
                                          r"\"threshold_bce\" \(this recipe's is \"bce\"\); "
                                          r"leave train\.temperature out"):
        parse_recipe(recipe, ["train.temperature=0.5"])


def test_logit_mse_is_refused_for_a_network_of_two_heads(tmp_path: Path) -> None:
    from streamtag.errors import ConfigError

    recipe = RECIPE.format(root=tmp_path, teacher=tmp_path / "teacher.pt", cache=tmp_path)
    with pytest.raises(ConfigError, match=r"train\.loss = \"logit_mse\" needs one head of "
                                          r"logits; mobilenet_attn trains with its own loss "
                                          r"\(two_head_bce\): leave train\.loss out"):
        parse_recipe(recipe, ["train.loss=logit_mse", "model.architecture=mobilenet_attn",
                              "model.window=64", "model.options={}"])


def _benchmark(name: str):
    """A script of benchmarks/, loaded by path."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)  # corpus.py's dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _corpus_script():
    return _benchmark("corpus")


def test_the_corpus_split_never_puts_a_package_in_both_parts() -> None:
    corpus = _corpus_script()
    parts: dict[str, set[str]] = {}
    for source in corpus.SOURCES:
        for i in range(200):
            split = corpus.split_of(source.package, f"{source.package}/file-{i}")
            parts.setdefault(source.package, set()).add("held-out" if split == "test"
                                                        else "fit")
    assert all(len(p) == 1 for p in parts.values()), parts
    assert {p for p, s in parts.items() if s == {"held-out"}} == set(corpus.HELD_OUT)
    assert not ({s.package for s in corpus.SOURCES} | set(corpus.SUNG_PACKAGES)) \
        & set(corpus.PROGRAMME + corpus.ACCEPTANCE)
    assert corpus.TRIPLEA_SUNG.startswith(f"usr/share/games/{corpus.SUNG_PACKAGES[0]}/")
    # a fit package's validation files are the same every time, and some exist
    fit = [corpus.split_of("pkg", f"pkg/file-{i}") for i in range(200)]
    assert {"train", "validation"} == set(fit)
    assert fit == [corpus.split_of("pkg", f"pkg/file-{i}") for i in range(200)]


def test_a_file_of_a_licence_that_may_not_join_the_rest_is_left_out(tmp_path: Path) -> None:
    corpus = _corpus_script()
    folder = tmp_path / "usr/share/game/music"
    folder.mkdir(parents=True)
    for name in ("kept.ogg", "other.ogg", "cc-by-sa.ogg", "notes.txt"):
        (folder / name).write_bytes(b"")
    source = corpus.Source("game-data", "music", ("usr/share/game/music",), 10, "GPL-2+",
                           exclude=("cc-by-sa.ogg",))
    assert [p.name for p in corpus.files_of(source, tmp_path)] == ["kept.ogg", "other.ogg"]
    # every excluded name is a bare file name of an audio file (compared with each path's name)
    for source in corpus.SOURCES:
        assert all("/" not in name and name.endswith(corpus.AUDIO) for name in source.exclude)


def _midi(note: int, seconds: float) -> bytes:
    """A standard MIDI file of one track: ``note`` on a flute (General MIDI's program 74) for
    ``seconds`` (120 bpm)."""
    from support.programme import midi_file, varlen

    ticks = int(seconds * 2 * 96)  # 96 ticks a beat, two beats a second
    events = (b"\x00\xc0\x49" + b"\x00\x90" + bytes([note, 100]) + varlen(ticks) + b"\x80"
              + bytes([note, 0]) + b"\x00\xff\x2f\x00")
    return midi_file(events, 96)


def test_a_doom_wad_s_midi_music_is_written_out_once_and_rendered(tmp_path: Path) -> None:
    from omg import WAD
    from omg.lump import Music

    corpus = _corpus_script()
    folder = tmp_path / "usr/share/games/doom"
    folder.mkdir(parents=True)
    wad = WAD()
    wad.music["D_E1M1"] = Music(_midi(60, 2.0))
    wad.music["D_E1M2"] = Music(_midi(60, 2.0))  # a level reusing the first one's music
    wad.music["D_MUS"] = Music(b"MUS\x1a" + bytes(12))  # Doom's own format: not MIDI
    wad.music["D_A\\B"] = Music(_midi(72, 1.0))  # a lump name with a path separator
    wad.to_file(str(folder / "game.wad"))
    (folder / "notes.txt").write_text("not a WAD")
    source = corpus.Source("game", "midi", ("usr/share/games/doom",), 10, "BSD-3-Clause",
                           wad_music=True)
    files = corpus.files_of(source, tmp_path)
    assert [p.name for p in files] == ["D_A_B.mid", "D_E1M1.mid"]
    assert all(p.parent == folder / "game.music" for p in files)
    assert files[1].read_bytes() == _midi(60, 2.0)
    assert corpus.files_of(source, tmp_path) == files  # written once, read again
    # fluidsynth renders the lump as the corpus renders any MIDI file: a C4 held for 2 s
    audio = corpus.decode(files[1], tmp_path)
    sounding = np.flatnonzero(np.abs(audio) > 1e-3) / corpus.RATE
    assert sounding[0] < 0.1 and 1.9 < sounding[-1] < 3.0, (sounding[0], sounding[-1])
    spectrum = np.abs(np.fft.rfft(audio[: corpus.RATE]))  # 1 Hz a bin
    assert abs(int(np.argmax(spectrum)) - 261.6) < 5


def test_a_mixture_lays_a_clip_of_another_package_or_a_singer_over_music_at_its_level(
        tmp_path: Path) -> None:
    import soundfile

    corpus = _corpus_script()
    n = int(corpus.CLIP_SECONDS * corpus.RATE)
    t = np.arange(n) / corpus.RATE
    frequency = {"a": 440.0, "b": 1000.0, "c": 2500.0, "v": 3500.0}
    rows = []
    for package, split, kind, level in (("a", "train", "music", 0.3), ("b", "train", "sound", 0.05),
                                        ("c", "validation", "midi", 0.1),
                                        ("d", "test", "music", 0.2)):
        for k in range(3):
            path = f"clips/{package}/x-{k:04d}.flac"
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            tone = frequency.get(package, 700.0)
            soundfile.write(tmp_path / path, (level * np.sin(2 * np.pi * tone * t)).astype(
                np.float32), corpus.RATE, subtype="PCM_16")
            rows.append({"path": path, "tags": "", "split": split, "source": package,
                         "kind": kind, "licence": f"licence of {package}", "duration": "3.1"})
    sung = [("singer/v", "CC-BY-4.0", (0.2 * np.sin(2 * np.pi * 3500.0 * np.arange(2 * n)
                                                   / corpus.RATE)).astype(np.float32))]
    mixed = corpus.mixtures(tmp_path, rows, sung, minutes=2.0, seed=1)
    assert len(mixed) == int(120 / corpus.CLIP_SECONDS)
    by_path = {r["path"]: r for r in rows}
    sung_count = 0
    for row in mixed:
        first = by_path[row["first"]]
        assert first["kind"] in ("music", "midi") and first["split"] != "test"
        assert row["split"] == first["split"] and row["kind"] == "mixture"
        if row["partner"].startswith("singer/"):
            sung_count += 1
            partner_tone, low, high = 3500.0, *corpus.SUNG_DB
        else:
            partner = by_path[row["partner"]]
            assert partner["split"] == first["split"] and partner["source"] != first["source"]
            assert partner["licence"] in row["licence"]
            partner_tone, low, high = frequency[partner["source"]], *corpus.PARTNER_DB
        db = float(row["partner_db"])
        assert low <= db <= high
        audio = soundfile.read(tmp_path / row["path"], dtype="float64")[0]
        spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
        # every tone falls on a bin of the clip's transform (n / RATE s long)
        partner_bin = round(partner_tone * n / corpus.RATE)
        first_bin = round(frequency[first["source"]] * n / corpus.RATE)
        ratio = 20 * np.log10(spectrum[partner_bin] / spectrum[first_bin])
        assert abs(ratio - db) < 0.5, (row, ratio)
        first_level = 0.3 if first["source"] == "a" else 0.1
        level = np.sqrt(np.mean(audio ** 2)) * np.sqrt(2)
        assert level == pytest.approx(first_level, rel=0.05) or np.max(np.abs(audio)) > 0.98
    # a validation clip of music has no partner of another package in its split: only singers
    assert all(r["partner"].startswith("singer/") for r in mixed if r["split"] == "validation")
    assert 0 < sung_count < len(mixed)
    again = corpus.mixtures(tmp_path, rows, sung, minutes=2.0, seed=1)
    assert [(r["path"], r["first"], r["partner"], r["partner_db"]) for r in again] \
        == [(r["path"], r["first"], r["partner"], r["partner_db"]) for r in mixed]
    # other mixtures go under another folder: the trainer's caches know a clip by its path
    all_sung = corpus.mixtures(tmp_path, rows, sung, minutes=1.0, seed=1, sung_share=1.0)
    assert all(r["partner"].startswith("singer/") for r in all_sung)
    folders = {Path(r["path"]).parent for r in mixed} | {Path(r["path"]).parent for r in all_sung}
    assert len(folders) == 2


def test_vocadito_s_excerpts_are_read_by_name_and_size_from_the_sdist(tmp_path: Path) -> None:
    import io
    import tarfile

    corpus = _corpus_script()

    def sdist(members: dict[str, bytes], link: str = "") -> Path:
        path = tmp_path / f"basic_pitch-{len(list(tmp_path.glob('*.tar.gz')))}.tar.gz"
        with tarfile.open(path, "w:gz") as archive:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            if link:
                info = tarfile.TarInfo(link)
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                archive.addfile(info)
        return path

    into = tmp_path / "into"
    into.mkdir()
    corpus.vocadito_excerpts(sdist({
        "basic_pitch-0.4.0/tests/resources/vocadito_10.wav": b"RIFF10",
        "basic_pitch-0.4.0/tests/resources/../resources/vocadito_14.wav": b"RIFF14",
        "basic_pitch-0.4.0/tests/resources/other.wav": b"x",
        "basic_pitch-0.4.0/vocadito_1.wav": b"x"},
        link="basic_pitch-0.4.0/tests/resources/vocadito_99.wav"), into)
    # two excerpts, under their own names in the folder; not the link, not other files
    assert sorted(p.name for p in into.iterdir()) == ["vocadito_10.wav", "vocadito_14.wav"]
    assert (into / "vocadito_14.wav").read_bytes() == b"RIFF14"
    big = sdist({"b/tests/resources/vocadito_3.wav": bytes(corpus.VOCADITO_MOST_BYTES + 1)})
    with pytest.raises(SystemExit, match="over the .* a vocadito excerpt takes; delete"):
        corpus.vocadito_excerpts(big, tmp_path / "into")


def test_a_game_s_zip_archive_gives_its_music_folder_s_audio(tmp_path: Path) -> None:
    import zipfile

    corpus = _corpus_script()
    (tmp_path / "usr/share/game").mkdir(parents=True)
    with zipfile.ZipFile(tmp_path / "usr/share/game/music.pk3", "w") as archive:
        for name in ("sound/cdtracks/one.ogg", "sound/cdtracks/two.ogg",
                     "sound/effects/shot.ogg", "sound/cdtracks/readme.txt"):
            archive.writestr(name, b"audio")
    source = corpus.Source("game-music", "music", ("sound/cdtracks",), 10, "GPL-2+",
                           archive="usr/share/game/music.pk3")
    found = corpus.files_of(source, tmp_path)
    assert [p.name for p in found] == ["one.ogg", "two.ogg"]
    assert found[0].read_bytes() == b"audio"
    assert corpus.files_of(source, tmp_path) == found  # unpacked once, read again


def test_the_second_held_out_part_is_never_fitted() -> None:
    corpus = _corpus_script()
    second = {s.package for s in corpus.SECOND_HELD_OUT}
    assert second and not second & {s.package for s in corpus.SOURCES}
    assert not second & set(corpus.PROGRAMME + corpus.ACCEPTANCE)
    assert {corpus.split_of(p, f"{p}/file-{i}") for p in second for i in range(200)} == {"test"}


def test_headline_thresholds_put_a_tag_in_as_many_file_headlines_as_the_teacher_s() -> None:
    bench = _benchmark("music_small")
    # three files of four, three and two clips; tag 0 is in the teacher's headline of two
    # files, tag 1 of none
    ids = [f"clips/p/a-{i:04d}" for i in range(4)] + [f"clips/p/b-{i:04d}" for i in range(3)] + \
        [f"clips/p/c-{i:04d}" for i in range(2)]
    on = np.zeros((9, 2), bool)
    on[[0, 1, 2, 4, 5], 0] = True                       # a: 3 of 4, b: 2 of 3, c: 0 of 2
    scores = np.array([[.9, .1], [.8, .2], [.7, .3], [.1, .4],   # a's third highest: .7
                       [.2, .5], [.6, .9], [.5, .6],             # b's second highest: .5
                       [.4, .2], [.3, .1]])                      # c's highest: .4
    fallback = np.array([0.5, 0.5])
    for method in bench.HEADLINE_METHODS:
        thresholds = bench.headline_thresholds(ids, on, scores, fallback, method)
        assert thresholds[0] == pytest.approx(0.5)  # a's and b's headlines, not c's
        assert thresholds[1] > 0.6                  # above b's .6, so in no file's headline
        files = {"a": range(4), "b": range(4, 7), "c": range(7, 9)}
        student = {f: bench.headline(scores[list(k)] >= thresholds) for f, k in files.items()}
        teacher = {f: bench.headline(on[list(k)]) for f, k in files.items()}
        assert student == teacher == {"a": {0}, "b": {0}, "c": frozenset()}
