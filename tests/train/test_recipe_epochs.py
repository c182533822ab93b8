"""Every paper recipe loads and trains one epoch with its own model, window and frontend, on a
tiny stand-in of its dataset written in the layout the dataset's adapter reads.

The stand-ins have a few tracks per split, each a little longer than the recipe's window, and
three tags (not the datasets' 56 or 50): enough to train, pick thresholds, score the test split
and export a model file (``model_features.pt`` for a recipe with high-level track features).
A VQ-VAE pre-training recipe (``model.architecture = "vqvae"``) runs ``streamtag.train.pretrain``
instead and must write its ``vqvae.pt``; a tagger that starts from a pre-trained encoder gets one
from an epoch of the pre-training recipe with its frontend and encoder options.

Only what the stand-in needs is overridden: where the data is, one epoch of one window per
track, the cache folder, the CPU, in-process loading and small batches.
"""

from __future__ import annotations

import csv
import json
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from streamtag import nets
from streamtag.model import modelfile
from streamtag.train import pretrain as pretraining
from streamtag.train.recipe import Recipe, load_recipe
from streamtag.train.run import train

pytest.importorskip("av", reason="the stand-in audio is written and decoded with PyAV")

RECIPES = Path(__file__).resolve().parents[2] / "models" / "recipes"
PAPER_RECIPES = sorted(p for p in RECIPES.glob("*.toml") if not p.stem.startswith("synthetic_"))
# One epoch takes more than about 20 s on two shared cores (CP-ResNets at 256 mels x 862 frames
# with 128 channels, MobileNetV2 + attention over 4096 frames); so does pre-training any VQ-VAE
# at a paper's size (128 x 1024 windows, about 200 GFLOPs each), and with it every tagger that
# starts from a pre-trained encoder.
SLOW = {"cp_resnet", "fa_resnet", "mobilenet_attn"}

TAGS = ("calm", "happy", "sad")
# The tags of each stand-in track, per split: every tag has a positive and a negative in the
# validation and test splits, so that thresholds and the macro ROC-AUC are defined.
TRACK_TAGS = {
    "train": [("happy",), ("sad", "calm"), ("happy", "calm"), ("sad",)],
    "validation": [("happy", "calm"), ("sad",)],
    "test": [("calm", "sad"), ("happy",)],
}
N_SYNTHETIC_CLIPS = 20  # 14 train, 3 validation, 3 test with the recipes' split fractions
MTG_SAMPLE_RATE = 44100  # the MTG-Jamendo mp3s
MTAT_SAMPLE_RATE = 16000  # the MagnaTagATune mp3s
MTAT_FOLDERS = {"train": "0123456789ab", "validation": "c", "test": "def"}


def _architecture(path: Path) -> str | None:
    return tomllib.loads(path.read_text(encoding="utf-8")).get("model", {}).get("architecture")


def _needs_encoder(path: Path) -> bool:
    """A tagger that starts from step 1's pre-trained VQ-VAE (model.encoder names its file)."""
    model = tomllib.loads(path.read_text(encoding="utf-8")).get("model", {})
    return bool(model.get("encoder") or model.get("options", {}).get("freeze_encoder"))


def _cases() -> list:
    cases = []
    for path in PAPER_RECIPES:
        slow = (path.stem in SLOW or nets.spec(_architecture(path))["task"] == "autoencode"
                or _needs_encoder(path))
        marks = [pytest.mark.slow] if slow else []
        cases.append(pytest.param(path, marks=marks, id=path.stem))
    return cases


# --------------------------------------------------------------------------------------------
# Stand-ins


def _track_seconds(recipe: Recipe) -> float:
    """A little longer than the window: the model sees real frames, never padding."""
    options = recipe.frontend_options()
    if recipe.model.input_kind == "waveform":
        window_s = recipe.model.window / options.sample_rate
    else:
        window_s = (recipe.model.window * options.hop_length + options.n_fft) / options.sample_rate
    return 1.1 * window_s + 0.2


def _window_frames(recipe: Recipe) -> int:
    return recipe.model.window + max(8, recipe.model.window // 10)


def _write_track(path: Path, seconds: float, sample_rate: int, seed: int) -> None:
    from streamtag.audio.files import write_audio
    from streamtag.audio.testsignals import music_like

    path.parent.mkdir(parents=True, exist_ok=True)
    write_audio(path, music_like(seconds, sample_rate, seed=seed), sample_rate)


def _tracks():
    """(split, index over all splits, tag names) of every stand-in track."""
    index = 0
    for split, rows in TRACK_TAGS.items():
        for tags in rows:
            yield split, index, tags
            index += 1


# The id the adapter gives stand-in track i: the MTG-Jamendo TRACK_ID, the MagnaTagATune
# clip_id, the folder+csv path without its suffix.
TRACK_ID = {"mtg_jamendo": lambda i: f"track_{1000 + i:07d}", "mtat": lambda i: str(2 + i),
            "folder_csv": lambda i: f"audio/{i:03d}"}


def _mtg_jamendo(recipe: Recipe, root: Path) -> None:
    """The repository's data/splits/split-N/autotagging_<subset>-<split>.tsv (tab-separated, CRLF,
    tags from the sixth column on as category---name), mp3s as audio_root/PATH and (96, T) npy
    mels as mel_root/PATH.npy, whichever of the two the recipe reads."""
    from streamtag.train.datasets import mtg_split_file

    o = recipe.data.options
    category = {"genre": "genre", "instrument": "instrument"}.get(o["subset"], "mood/theme")
    audio_root, mel_root = recipe.data.path("audio_root"), recipe.data.path("mel_root")
    rows: dict[str, list[str]] = {split: [] for split in TRACK_TAGS}
    for split, i, names in _tracks():
        rel = f"{i % 100:02d}/{1000 + i}.mp3"
        seconds = _track_seconds(recipe)
        rows[split].append("\t".join([TRACK_ID["mtg_jamendo"](i), f"artist_{i:06d}",
                                      f"album_{i:06d}", rel, f"{seconds:.1f}",
                                      *(f"{category}---{name}" for name in names)]))
        if audio_root is not None:
            _write_track(audio_root / rel, seconds, MTG_SAMPLE_RATE, seed=i)
        if mel_root is not None:
            mel = (mel_root / rel).with_suffix(".npy")
            mel.parent.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(i)
            np.save(mel, (rng.standard_normal((96, _window_frames(recipe))) * 10 - 40)
                    .astype(np.float32))
    for split, lines in rows.items():
        path = mtg_split_file(root / "data", o["subset"], o["split_index"], split)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"
        path.write_bytes(("\r\n".join([header, *lines]) + "\r\n").encode("utf-8"))


def _mtat(recipe: Recipe, root: Path) -> None:
    """annotations_final.csv (tab-separated, quoted: clip_id, one 0/1 column per tag,
    mp3_path) and the mp3 folders, whose first character is the split (0-b, c, d-f)."""
    annotations = recipe.data.path("annotations")
    audio_root = recipe.data.path("audio_root") or Path(recipe.data.root)
    annotations.parent.mkdir(parents=True, exist_ok=True)
    with open(annotations, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_ALL, lineterminator="\n")
        writer.writerow(["clip_id", *TAGS, "mp3_path"])
        for split, i, names in _tracks():
            folders = MTAT_FOLDERS[split]
            mp3 = f"{folders[i % len(folders)]}/artist_{i}-album-{i:02d}-song-0-29.mp3"
            writer.writerow([TRACK_ID["mtat"](i), *("1" if t in names else "0" for t in TAGS),
                             mp3])
            _write_track(audio_root / mp3, _track_seconds(recipe), MTAT_SAMPLE_RATE, seed=i)


def _folder_csv(recipe: Recipe, root: Path) -> None:
    """The csv (path,tags,split; tags separated by ;) and the audio files it names."""
    csv_path = recipe.data.path("csv")
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    rate = int(recipe.frontend_options().sample_rate)
    lines = ["path,tags,split"]
    for split, i, names in _tracks():
        rel = TRACK_ID["folder_csv"](i) + ".flac"
        lines.append(f"{rel},{';'.join(names)},{split}")
        _write_track(csv_path.parent / rel, _track_seconds(recipe), rate, seed=i)
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _audio_folder(recipe: Recipe, root: Path) -> None:
    """Audio files anywhere under root (no labels): the train and validation tracks."""
    rate = int(recipe.frontend_options().sample_rate)
    for split, i, _ in _tracks():
        if split != "test":
            _write_track(root / f"{i % 3:02d}" / f"{i:03d}.flac", _track_seconds(recipe), rate,
                         seed=i)


def _overrides(peek: Recipe, tmp_path: Path) -> list[str]:
    data = tmp_path / "data"
    overrides = [f"data.root={data}", "train.epochs=1", f"train.cache_dir={tmp_path / 'cache'}",
                 "train.workers=0", "train.device=cpu",
                 # One window per track: how much an epoch trains, not what the model sees;
                 # the recipes' 4-10 windows would make the CRNN and SampleCNN cases 20-30 s.
                 "train.windows_per_track=1",
                 f"train.batch_size={min(peek.train.batch_size, 8)}", "eval.batch_size=4"]
    if peek.train.swa and peek.train.swa_start > 1:
        # Average from the one epoch, so that the SWA (and snapshot) export runs too.
        overrides.append("train.swa_start=1")
    kind = peek.data.kind
    for key in ("audio_root", "mel_root"):  # the stand-in lives under data.root
        value = peek.data.options.get(key, "")
        if value and Path(value).expanduser().is_absolute():
            overrides.append(f"data.{key}={key.removesuffix('_root')}")
    if peek.data.options.get("tags"):  # a recipe that fixes its vocabulary gets the stand-in's
        overrides.append("data.tags=" + json.dumps(list(TAGS)))
    elif kind == "mtat":  # the most frequent top_n of the stand-in's few columns
        overrides.append(f"data.top_n={min(peek.data.options['top_n'], len(TAGS))}")
    if kind == "synthetic":
        overrides.append(f"data.n_clips={N_SYNTHETIC_CLIPS}")
    return overrides


WRITERS = {"mtg_jamendo": _mtg_jamendo, "mtat": _mtat, "folder_csv": _folder_csv,
           "audio_folder": _audio_folder}


def _stand_in(path: Path, tmp_path: Path) -> Recipe:
    """The recipe with the overrides its stand-in needs, and the stand-in written."""
    peek = load_recipe(path)
    overrides = _overrides(peek, tmp_path)
    if _needs_encoder(path):
        overrides.append(f"model.encoder={_pretrained_encoder(peek, tmp_path / 'step1')}")
    recipe = load_recipe(path, overrides)
    # The stand-in changes the data only: the model, its window and the frontend are the recipe's.
    assert (recipe.model.architecture, recipe.model.options, recipe.model.window,
            recipe.model.hop) == (peek.model.architecture, peek.model.options, peek.model.window,
                                  peek.model.hop)
    assert (recipe.frontend, recipe.augment) == (peek.frontend, peek.augment)
    if recipe.data.kind != "synthetic":  # synthetic: the recipe's generator, fewer clips
        WRITERS[recipe.data.kind](recipe, Path(recipe.data.root))
    if recipe.data.options.get("features"):
        _track_features(recipe)
    return recipe


def _track_features(recipe: Recipe) -> None:
    """data.features as CSV: track_id and model.options.n_features columns of numbers."""
    n = recipe.model.options["n_features"]
    rng = np.random.default_rng(0)
    lines = [",".join(["track_id", *(f"feature_{j}" for j in range(n))])]
    for _, i, _ in _tracks():
        values = rng.standard_normal(n)
        lines.append(",".join([TRACK_ID[recipe.data.kind](i), *(f"{v:.4f}" for v in values)]))
    path = recipe.data.path("features")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------
# The test


def test_every_paper_recipe_has_a_case() -> None:
    names = {p.stem for p in PAPER_RECIPES}
    assert {"default", "vggish", "crnn", "samplecnn", "mel_cnn", "lstm"} <= names
    assert SLOW <= names, SLOW - names  # a renamed recipe would silently lose its slow mark


@pytest.mark.slow
@pytest.mark.parametrize("path", _cases())
def test_recipe_trains_one_epoch_on_a_stand_in(path: Path, tmp_path: Path) -> None:
    if nets.spec(_architecture(path))["task"] == "autoencode":
        _check_pretraining(path, tmp_path)
        return
    recipe = _stand_in(path, tmp_path)

    result = train(recipe, tmp_path / "run", echo=False)

    assert result.epochs == 1
    if recipe.data.kind == "synthetic":
        from streamtag.audio.synthetic import TAGS as SYNTHETIC_TAGS

        tags = list(SYNTHETIC_TAGS)
        with open(Path(recipe.data.root) / "tags.csv", newline="", encoding="utf-8") as f:
            n_test = sum(row["split"] == "test" for row in csv.DictReader(f))
    else:
        tags, n_test = sorted(TAGS), len(TRACK_TAGS["test"])
    if recipe.data.options.get("features"):
        n_tags = _check_features_model(recipe, result.model_path, tags)
    else:
        n_tags = _check_model_file(recipe, result.model_path, tags)

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["epochs_trained"] == 1 and len(metrics["history"]) == 1
    test = metrics["test"]
    assert test["n_examples"] == n_test and test["n_tags"] == n_tags
    for key in ("roc_auc_macro", "pr_auc_macro"):
        assert test[key] is not None and 0.0 <= test[key] <= 1.0, (key, test[key])
    assert math.isfinite(test["loss"]) and math.isfinite(metrics["history"][0]["train_loss"])
    assert result.metrics["roc_auc_macro"] == pytest.approx(test["roc_auc_macro"])


def _check_model_file(recipe: Recipe, path: Path, tags: list[str]) -> int:
    """model.pt: the daemon's model file, for the recipe's model, window and frontend."""
    assert path.name == "model.pt"
    loaded = modelfile.load(path, device="cpu")
    assert sorted(loaded.tags) == sorted(tags)
    assert (loaded.window, loaded.hop) == (recipe.model.window, recipe.model.hop)
    assert loaded.input_kind == recipe.model.input_kind
    assert loaded.frontend_options == recipe.frontend_options()
    assert loaded.manifest.architecture["name"] == recipe.model.architecture
    assert len(loaded.thresholds) == len(loaded.tags)
    return len(loaded.tags)


def _check_features_model(recipe: Recipe, path: Path, tags: list[str]) -> int:
    """A run with high-level track features writes a TorchScript forward(x, features) with
    features.json inside instead (no daemon model file: live streams have no such features)."""
    assert not (path.parent / "model.pt").exists()
    extra = {"features.json": ""}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    info = json.loads(extra["features.json"])
    assert sorted(info["tags"]) == sorted(tags)
    assert (info["window"], info["hop"]) == (recipe.model.window, recipe.model.hop)
    assert info["frontend"] == recipe.frontend_options().to_dict()
    n_features = recipe.model.options["n_features"]
    assert len(info["feature_names"]) == n_features
    x = torch.zeros(1, recipe.frontend_options().n_mels, recipe.model.window)
    with torch.no_grad():
        assert tuple(module(x, torch.zeros(1, n_features)).shape) == (1, len(tags))
    return len(info["tags"])


def _check_pretraining(path: Path, tmp_path: Path) -> None:
    recipe = _stand_in(path, tmp_path)

    result = pretraining.pretrain(recipe, tmp_path / "run", echo=False)

    assert result.path == tmp_path / "run" / pretraining.PRETRAINED_FILE and result.epochs == 1
    payload = torch.load(result.path, map_location="cpu", weights_only=True)
    assert payload["format"] == pretraining.FILE_FORMAT
    assert (payload["window"], payload["hop"]) == (recipe.model.window, recipe.model.hop)
    assert payload["frontend"] == recipe.frontend_options().to_dict()
    for key, value in recipe.model.options.items():
        assert payload["options"][key] == value, key
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["epochs_trained"] == 1 and math.isfinite(metrics["final"]["mse"])


def _pretrained_encoder(tagger: Recipe, tmp_path: Path) -> Path:
    """Step 1 for a tagger that starts from a pre-trained VQ-VAE: one epoch of the paper
    pre-training recipe with the tagger's frontend and encoder options, on its own stand-in."""
    def encoder(recipe: Recipe) -> dict:
        options = {**nets.spec(recipe.model.architecture)["options"], **recipe.model.options}
        return {key: options.get(key) for key in ("vq_type", "channels", "n_codes")}

    for path in PAPER_RECIPES:
        if nets.spec(_architecture(path))["task"] == "autoencode":
            step1 = load_recipe(path)
            if step1.frontend == tagger.frontend and encoder(step1) == encoder(tagger):
                recipe = _stand_in(path, tmp_path)
                return pretraining.pretrain(recipe, tmp_path / "run", echo=False).path
    pytest.fail(f"{tagger.name} starts from a pre-trained VQ-VAE, but no recipe in {RECIPES} "
                "pre-trains one with its frontend and encoder options")
