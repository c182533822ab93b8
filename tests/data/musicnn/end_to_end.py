"""End-to-end parity from audio: streamtag vs musicnn's own TensorFlow graph, per window.

streamtag's side decodes the file (PyAV), resamples it to 16 kHz (soxr), computes the
``musicnn`` preset log-mel with its own frontend and runs the converted model file. musicnn's
side is its extractor's path: ``librosa.load(sr=16000)``, librosa's mel spectrogram and
``log10(1 + 10000·mel)`` -- in float32 (musicnn's float16 cast overflows to inf on loud audio,
counted separately below) -- into musicnn's graph with its checkpoint. Windows are 187 frames
from frame 0, one after another, as musicnn's extractor cuts them.

The audio is streamtag's synthetic music (``streamtag.audio.synthetic.demo_piece``: calm and
loud, dense sections), rendered at 44.1 kHz so that both sides resample, written as 16-bit WAV;
or, with ``--audio FILE...`` on the first step, real recordings, each decoded by each side's
own decoder (PyAV and soxr for streamtag, librosa for musicnn).

Three steps (the middle one in an environment with TensorFlow 2, tf-keras, librosa and
``pip install --no-deps musicnn==0.1.0``):

    PYTHONPATH=. python tests/data/musicnn/end_to_end.py ours WORKDIR [--audio FILE...]
    TF_USE_LEGACY_KERAS=1 python tests/data/musicnn/end_to_end.py reference WORKDIR
    PYTHONPATH=. python tests/data/musicnn/end_to_end.py compare WORKDIR
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODELS = {"musicnn-mtt": "MTT_musicnn", "musicnn-msd": "MSD_musicnn",
          "vgg-mtt": "MTT_vgg", "vgg-msd": "MSD_vgg"}
N_FRAMES = 187
PIECES = {"demo-0": 0, "demo-1": 1, "demo-2": 2}  # file name -> demo_piece seed
SECONDS = 60.0
FILE_RATE = 44100
# librosa's STFT pads the signal's ends: "reflect" by default before librosa 0.10 (musicnn's
# time, and streamtag's musicnn preset), "constant" (zeros) since. Only the first frames differ.
PAD_MODES = ("reflect", "constant")


def _windows(features: np.ndarray) -> np.ndarray:
    """(frames, mels) -> (windows, frames, mels), 187-frame windows from frame 0."""
    count = (len(features) - N_FRAMES) // N_FRAMES + 1
    return np.stack([features[i * N_FRAMES:(i + 1) * N_FRAMES] for i in range(count)])


def _pieces(workdir: Path) -> dict[str, str]:
    """Piece name -> audio file, as the first step chose them."""
    return json.loads((workdir / "pieces.json").read_text())


def ours(workdir: Path, audio: list[Path]) -> None:
    import torch

    from streamtag import compute_logmel
    from streamtag.audio.files import load_audio, write_audio
    from streamtag.audio.synthetic import demo_piece
    from streamtag.catalog import musicnn as musicnn_models
    from streamtag.model import modelfile

    torch.set_num_threads(1)
    workdir.mkdir(parents=True, exist_ok=True)
    package = musicnn_models.find_installed_package()
    if package is None:
        sys.exit("install musicnn: pip install --no-deps musicnn==0.1.0")
    results: dict[str, np.ndarray] = {}
    pieces = {file.stem: str(file.resolve()) for file in audio}
    if not pieces:
        for piece, seed in PIECES.items():
            signal, _ = demo_piece(SECONDS, seed=seed, sample_rate=FILE_RATE)
            write_audio(workdir / f"{piece}.wav", signal, FILE_RATE)
            pieces[piece] = str(workdir / f"{piece}.wav")
    (workdir / "pieces.json").write_text(json.dumps(pieces))
    for name in MODELS:
        path = workdir / f"{name}.pt"
        musicnn_models.convert(package, name, path)
        model = modelfile.load(path, device="cpu")
        for piece, file in pieces.items():
            samples, _ = load_audio(file, sample_rate=16000)
            features = compute_logmel(samples, model.frontend_options)  # (frames, mels)
            windows = _windows(features).transpose(0, 2, 1)  # (windows, mels, frames)
            results[f"{name}/{piece}"] = model(windows).numpy()
    np.savez(workdir / "ours.npz", **results)
    print(f"wrote {workdir / 'ours.npz'}")


def reference(workdir: Path) -> None:
    import librosa
    import tensorflow as tf

    spec = importlib.util.spec_from_file_location("make_reference", HERE / "make_reference.py")
    make_reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_reference)
    tf.compat.v1.disable_eager_execution()
    package = Path(importlib.util.find_spec("musicnn").submodule_search_locations[0])
    results: dict[str, np.ndarray] = {}
    for piece, file in _pieces(workdir).items():
        audio, _ = librosa.load(file, sr=16000)
        for pad_mode in PAD_MODES:
            mel = librosa.feature.melspectrogram(y=audio, sr=16000, hop_length=256, n_fft=512,
                                                 n_mels=96, pad_mode=pad_mode).T
            float32 = np.log10(10000 * mel + 1).astype(np.float32)
            for name, folder in MODELS.items():
                results[f"{name}/{piece}/{pad_mode}"] = make_reference.musicnn_probabilities(
                    package, folder, _windows(float32))
        with np.errstate(over="ignore"):
            float16 = np.log10(10000 * mel.astype(np.float16) + 1)  # musicnn's extractor
        results[f"float16_inf_windows/{piece}"] = np.array(
            [np.isinf(w).any() for w in _windows(float16)])
        # what musicnn's own tool says: its float16 features into its MSD graph
        results[f"float16/{piece}"] = make_reference.musicnn_probabilities(
            package, MODELS["musicnn-msd"], _windows(float16).astype(np.float32))
    np.savez(workdir / "reference.npz", **results)
    print(f"wrote {workdir / 'reference.npz'}")


def compare(workdir: Path) -> None:
    ours_ = np.load(workdir / "ours.npz")
    theirs = np.load(workdir / "reference.npz")
    pieces = _pieces(workdir)
    print(f"{len(pieces)} pieces: " + ", ".join(Path(f).name for f in pieces.values()))
    worst = {}
    for pad_mode in PAD_MODES:
        print(f"librosa pad_mode={pad_mode!r}")
        print(f"  {'model':<12} {'windows':>7} {'max |diff|':>11} {'median':>9} "
              f"{'first windows':>14} {'the others':>11}")
        worst[pad_mode] = 0.0
        for name in MODELS:
            diffs = [np.abs(ours_[f"{name}/{p}"] - theirs[f"{name}/{p}/{pad_mode}"]).max(axis=1)
                     for p in pieces]
            per_window = np.concatenate(diffs)
            first = max(d[0] for d in diffs)
            rest = max(d[1:].max() for d in diffs)
            worst[pad_mode] = max(worst[pad_mode], float(per_window.max()))
            print(f"  {name:<12} {len(per_window):>7} {per_window.max():>11.2e} "
                  f"{np.median(per_window):>9.2e} {first:>14.2e} {rest:>11.2e}")
    inf = np.concatenate([theirs[f"float16_inf_windows/{p}"] for p in pieces])
    print(f"musicnn's float16 features: {int(inf.sum())} of {len(inf)} windows hold inf")
    # On those windows, musicnn-msd's top four tags from float16 vs float32 features.
    top = {kind: np.concatenate([np.argsort(-theirs[key.format(p)], axis=1)[:, :4]
                                 for p in pieces])[inf]
           for kind, key in (("float16", "float16/{}"), ("float32", "musicnn-msd/{}/reflect"))}
    distinct16 = {tuple(row) for row in top["float16"]}
    distinct32 = {tuple(row) for row in top["float32"]}
    changed = int(sum(tuple(a) != tuple(b) for a, b in zip(*top.values(), strict=True)))
    from streamtag.catalog import musicnn as musicnn_models

    labels = musicnn_models.read_labels(musicnn_models.find_installed_package(), "musicnn-msd")
    print(f"  on them, musicnn-msd's top four tags: {len(distinct16)} distinct list(s) from "
          f"float16 features, {len(distinct32)} from float32; {changed} of {int(inf.sum())} "
          "windows change; float16 gives: "
          + " | ".join(", ".join(labels[i] for i in row) for row in sorted(distinct16)[:3]))
    for pad_mode, value in worst.items():
        print(f"worst window, pad_mode={pad_mode!r}: {value:.2e} "
              f"({'within' if value <= 0.01 else 'OVER'} 0.01)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["ours", "reference", "compare"])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--audio", type=Path, nargs="+", default=[],
                        help="real recordings for the first step (default: synthetic music)")
    args = parser.parse_args()
    if args.step == "ours":
        ours(args.workdir, args.audio)
    else:
        {"reference": reference, "compare": compare}[args.step](args.workdir)


if __name__ == "__main__":
    main()
