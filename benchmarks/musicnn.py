"""musicnn-msd through streamtag against musicnn's own TensorFlow pipeline, one thread each.

Both tag the same audio files end to end, as a user would call them: musicnn's
``extractor(file, model="MSD_musicnn")`` (librosa decoding and resampling, librosa mel, float16
log, TensorFlow graph built and restored per call), and streamtag's offline tagger (PyAV
decoding, soxr resampling, the C++ frontend, the converted TorchScript model), both on
non-overlapping 3 s windows. streamtag is timed twice: with its model load in each call (as
musicnn) and with the model already loaded (the daemon's steady state). Seconds of audio per
second of wall time, best of ``--repeats`` after a warm-up, and the ratios.

The peer runs in its own Python (``--peer-python``), one with tensorflow-cpu, tf-keras and
``pip install --no-deps musicnn==0.1.0``; it is started with TF_USE_LEGACY_KERAS=1 and one
intra-op and one inter-op thread.

    python benchmarks/musicnn.py --peer-python PATH/TO/tf/python [AUDIO ...] [--seconds 120]
        [--repeats 3] [--json out.json]

Without AUDIO it writes a piece of streamtag's synthetic music (``--seconds`` long, 44.1 kHz
WAV) and uses that. streamtag's model is the installed ``musicnn-msd`` (``streamtag models
install musicnn-msd`` first), or ``--model PATH``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

WINDOW_FRAMES = 187
HOP_LENGTH = 256
SAMPLE_RATE = 16000

PEER = r"""
import json, sys, time, os, io, contextlib
from musicnn.extractor import extractor
files, repeats = sys.argv[1:-1], int(sys.argv[-1])
with contextlib.redirect_stdout(io.StringIO()):
    extractor(files[0], model="MSD_musicnn", input_overlap=False, extract_features=False)
for path in files:
    best, windows = float("inf"), 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            taggram, tags = extractor(path, model="MSD_musicnn", input_overlap=False,
                                      extract_features=False)
        best = min(best, time.perf_counter() - t0)
        windows = len(taggram)
    print(json.dumps({"path": path, "seconds": best, "windows": windows}), flush=True)
"""


def synthetic_file(folder: Path, seconds: float) -> Path:
    from streamtag.audio.files import write_audio
    from streamtag.audio.synthetic import demo_piece

    audio, _ = demo_piece(seconds, seed=7, sample_rate=44100)
    path = folder / "synthetic-music.wav"
    write_audio(path, audio, 44100)
    return path


def duration_s(path: Path) -> float:
    from streamtag.audio.files import load_audio

    audio, rate = load_audio(path)
    return len(audio) / rate


def time_ours(model_spec: str, files: list[Path], repeats: int) -> dict[str, dict]:
    import torch

    from streamtag.catalog.installed import resolve_model
    from streamtag.engine.batching import EngineConfig
    from streamtag.engine.tagging import tag_files
    from streamtag.model.inference import InferenceModel

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    path = resolve_model(model_spec)
    config = EngineConfig(max_batch=32, hop_seconds=WINDOW_FRAMES * HOP_LENGTH / SAMPLE_RATE)
    tag_files(files[:1], InferenceModel.load(path, device="cpu"), config=config)  # warm-up
    results = {}
    for file in files:
        with_load = loaded = float("inf")
        windows = 0
        model = InferenceModel.load(path, device="cpu")
        for _ in range(repeats):
            t0 = time.perf_counter()
            fresh = InferenceModel.load(path, device="cpu")
            tag_files([file], fresh, config=config)
            with_load = min(with_load, time.perf_counter() - t0)
            t0 = time.perf_counter()
            [result] = tag_files([file], model, config=config)
            loaded = min(loaded, time.perf_counter() - t0)
            windows = result.windows
        results[str(file)] = {"with_load": with_load, "loaded": loaded, "windows": windows}
    return results


def time_peer(python: str, files: list[Path], repeats: int) -> dict[str, dict]:
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_NUM_INTRAOP_THREADS": "1",
           "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
           "CUDA_VISIBLE_DEVICES": ""}
    env.pop("PYTHONPATH", None)  # the peer's own packages only
    done = subprocess.run([python, "-c", PEER, *map(str, files), str(repeats)], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"the peer failed (exit {done.returncode}); it needs tensorflow-cpu, tf-keras "
                 f"and musicnn (--no-deps):\n{done.stderr[-2000:]}")
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {row["path"]: row for row in rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("audio", nargs="*", help="audio files (default: synthetic music)")
    parser.add_argument("--peer-python", required=True,
                        help="a Python with tensorflow-cpu, tf-keras and musicnn installed")
    parser.add_argument("--model", default="musicnn-msd",
                        help="streamtag's model: an installed name or a file")
    parser.add_argument("--seconds", type=float, default=120.0,
                        help="length of the synthetic piece when no AUDIO is given")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the figures as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="streamtag-bench-") as folder:
        files = [Path(a) for a in args.audio] or [synthetic_file(Path(folder), args.seconds)]
        peer = time_peer(args.peer_python, files, args.repeats)
        ours = time_ours(args.model, files, args.repeats)
        rows = []
        for file in files:
            seconds = duration_s(file)
            theirs, mine = peer[str(file)], ours[str(file)]
            rows.append({
                "file": file.name, "audio_s": round(seconds, 1),
                "windows": {"musicnn": theirs["windows"], "streamtag": mine["windows"]},
                "musicnn_x": seconds / theirs["seconds"],
                "streamtag_with_load_x": seconds / mine["with_load"],
                "streamtag_loaded_x": seconds / mine["loaded"],
            })
    print("musicnn-msd, one thread, non-overlapping 3 s windows; seconds of audio per second")
    print(f"{'file':<24s} {'audio s':>8s} {'windows':>9s} {'musicnn':>9s} {'ours+load':>10s} "
          f"{'ours':>8s} {'ratio+load':>11s} {'ratio':>7s}")
    for r in rows:
        windows = f"{r['windows']['musicnn']}/{r['windows']['streamtag']}"
        print(f"{r['file'][:24]:<24s} {r['audio_s']:8.1f} {windows:>9s} {r['musicnn_x']:9.1f} "
              f"{r['streamtag_with_load_x']:10.1f} {r['streamtag_loaded_x']:8.1f} "
              f"{r['streamtag_with_load_x'] / r['musicnn_x']:10.2f}x "
              f"{r['streamtag_loaded_x'] / r['musicnn_x']:6.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
