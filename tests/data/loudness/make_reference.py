"""Reference loudness from FFmpeg's ``ebur128`` filter, for tests/audio/test_loudness.py.

Run once, with the ``ffmpeg`` command installed (Debian's ``ffmpeg`` package):

    PYTHONPATH=. python tests/data/loudness/make_reference.py

It writes ``ffmpeg_ebur128.npz`` beside itself: ``recipe`` (JSON: the input's length, rate,
seeds and levels; ``reference_input`` makes the input from it, so the test needs no ffmpeg),
``momentary`` and ``short_term`` (LUFS, one value per 100 ms block, the block ending at
``(k + 1) * 4800`` samples) and ``integrated`` (LUFS, at the end), with the ``ffmpeg -version``
line that made them.

The input is 48 kHz stereo (the rate ``ebur128`` measures at: any other is resampled before it),
two different music-like signals (``streamtag.audio.testsignals``) with a quieter and a louder
passage, written as 32-bit float WAV so that ffmpeg reads exactly the samples the test measures.
The values come from the filter's metadata (``metadata=1``, printed by ``ametadata``) with three
decimals; its log lines (``framelog``) print the same values rounded to 0.1. ``asetnsamples``
hands the filter one 100 ms block per frame, so each frame's metadata is the block it ends.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from streamtag.audio.testsignals import music_like

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "ffmpeg_ebur128.npz"
RECIPE = {
    "seconds": 20.0,
    "sample_rate": 48000,
    "seeds": [11, 12],  # left, right
    "level_db": -12.0,  # of both channels, where no passage changes it
    # (start s, end s, dB relative to level_db): a quiet stretch, then a loud one
    "passages": [[6.0, 10.0, -18.0], [13.0, 16.0, 7.0]],
    "ramp_s": 0.05,  # each change of level is a ramp (linear in dB) this long
}
# ebur128 writes this while its 400 ms (momentary) or 3 s (short-term) window is not yet full:
# its power starts at 1e-12, -0.691 + 10 log10(1e-12).
NOT_FULL_LUFS = -120.691


def reference_input(recipe: dict) -> np.ndarray:
    """The (frames, 2) float32 input the recipe describes."""
    rate = recipe["sample_rate"]
    n = int(round(recipe["seconds"] * rate))
    times, levels = [0.0], [0.0]
    half = recipe["ramp_s"] / 2
    for start, end, db in recipe["passages"]:
        times += [start - half, start + half, end - half, end + half]
        levels += [0.0, db, db, 0.0]
    db = recipe["level_db"] + np.interp(np.arange(n) / rate, times, levels)
    gain = 10.0 ** (db / 20.0)
    channels = [gain * music_like(recipe["seconds"], rate, seed=seed) for seed in recipe["seeds"]]
    return np.stack(channels, axis=1).astype(np.float32)


def write_float_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """(frames, channels) float32 as a 32-bit float WAV, sample for sample."""
    import av

    frames, channels = samples.shape
    layout = {1: "mono", 2: "stereo"}[channels]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_f32le", rate=sample_rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples).reshape(1, -1),
                                           format="flt", layout=layout)
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


_META = re.compile(r"^lavfi\.r128\.(M|S|I)=(-?[\d.]+|-?inf|nan)$")


def ebur128(path: Path, sample_rate: int = 48000) -> dict[str, np.ndarray | float]:
    """Runs ffmpeg's ebur128 on ``path``: momentary and short-term LUFS per 100 ms block, and
    the integrated LUFS after the last."""
    block = sample_rate // 10
    graph = (f"asetnsamples=n={block}:p=0,ebur128=metadata=1,"
             "ametadata=mode=print:file=-")
    text = subprocess.run(["ffmpeg", "-hide_banner", "-nostats", "-loglevel", "error",
                           "-i", str(path), "-af", graph, "-f", "null", "-"],
                          check=True, capture_output=True, text=True).stdout
    values: dict[str, list[float]] = {"M": [], "S": [], "I": []}
    for line in text.splitlines():
        match = _META.match(line.strip())
        if match:
            values[match[1]].append(float(match[2]))
    if not values["M"] or len(values["M"]) != len(values["S"]):
        raise RuntimeError(f"unexpected ebur128 output from ffmpeg:\n{text[:2000]}")
    return {"momentary": np.array(values["M"]), "short_term": np.array(values["S"]),
            "integrated": values["I"][-1]}


def ffmpeg_version() -> str:
    return subprocess.run(["ffmpeg", "-version"], check=True, capture_output=True,
                          text=True).stdout.splitlines()[0]


def measure(recipe: dict) -> dict[str, np.ndarray | float]:
    """The recipe's input through ffmpeg's ebur128 (via a temporary WAV)."""
    samples = reference_input(recipe)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "input.wav"
        write_float_wav(path, samples, recipe["sample_rate"])
        return ebur128(path, recipe["sample_rate"])


def main() -> None:
    found = measure(RECIPE)
    np.savez_compressed(REFERENCE, recipe=np.array(json.dumps(RECIPE)),
                        ffmpeg=np.array(ffmpeg_version()), **found)
    print(f"wrote {REFERENCE}: {len(found['momentary'])} blocks, "
          f"integrated {found['integrated']:.3f} LUFS")


if __name__ == "__main__":
    main()
