"""Fits the content classifier (streamtag/engine/content_weights.json) on audio from Debian
packages and prints its confusion on material held out from the fit.

    apt-get install singularity-music openttd-openmsx fretsonfire-songs-muldjord \
        fretsonfire-songs-sectoid fluidsynth fluid-soundfont-gm espeak-ng festival \
        festvox-kallpc16k alsa-utils sox
    python benchmarks/content_fit.py [--cache DIR] [--write]

Material (16 kHz mono, windows of 3 s every 1 s, as the engine cuts them):

- music: singularity-music's recordings (orchestral, electronic, ambient game music),
  openttd-openmsx's MIDI files rendered with FluidR3 GM, and the metal and rock songs of
  fretsonfire-songs-muldjord and -sectoid (each song's backing and guitar tracks mixed as the
  game plays them: dense, distorted guitars); the fit takes every other piece of each, the
  evaluation the rest (``chaos_god`` among them);
- speech: espeak-ng reading the GPL-3 text in four voices (fit) and the Apache-2.0 text in
  three others (held out); festival's diphone voice (held out: another synthesiser); the
  person saying the channel names in alsa-utils' test sounds (held out: a real voice);
- noise: white, pink and brown noise from sox at -45 to -10 dBFS, the fit's seeds and levels
  apart from the held-out ones; alsa-utils' Noise.wav (held out);
- tone: sines, squares and sawtooths from sox at frequencies apart between fit and evaluation;
- the fit's speech again over its noise and music (``mixtures``), as speech.

``--write`` stores the fitted weights; without it only the confusion is printed. The fit is
a network of sixteen tanh units (numpy, full-batch Adam from a fixed seed, a small L2 penalty,
each class weighted equally): ten features need nothing larger (a logistic regression on them
called 0.8 % of the held-out game and MIDI music's windows speech; this calls 0.2 % of all
held-out music's speech), and its weights are a JSON of about 270 numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from streamtag.audio.files import load_audio
from streamtag.engine.content import (
    CLASSES,
    FEATURES,
    WEIGHTS_FILE,
    ContentModel,
    content_options,
    window_features,
)
from streamtag.frontend import compute_logmel

RATE = 16000
WINDOW_S, HOP_S = 3.0, 1.0
SINGULARITY = Path("/usr/share/games/singularity/music")
OPENMSX = Path("/usr/share/games/openttd/baseset/openmsx")
FRETSONFIRE = Path("/usr/share/games/fretsonfire/data/songs")
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
ALSA_SOUNDS = Path("/usr/share/sounds/alsa")
LICENSES = Path("/usr/share/common-licenses")
FIT_VOICES = ("en", "en-us", "de", "es")
HELD_VOICES = ("en-gb-scotland", "fr", "it")
MUSIC_SECONDS = 120.0  # of each piece, after its first 5 s
SPEECH_CHUNK = 1800  # characters of text per utterance


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cached(cache: Path, name: str, make) -> np.ndarray:
    """The 16-kHz samples of ``name``, made once by ``make(wav_path)``."""
    path = cache / (hashlib.sha1(name.encode()).hexdigest()[:16] + ".npy")
    if not path.exists():
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "out.wav"
            make(wav)
            audio, _ = load_audio(wav, RATE)
        np.save(path, audio.astype(np.float32))
    return np.load(path)


def texts(name: str) -> list[str]:
    text = " ".join((LICENSES / name).read_text().split())
    return [text[i: i + SPEECH_CHUNK] for i in range(0, len(text), SPEECH_CHUNK)]


def material(cache: Path) -> list[tuple[str, str, str, np.ndarray]]:
    """(kind, split, name, samples) of every piece."""
    items = []
    pieces = sorted(SINGULARITY.rglob("*.ogg"))
    for i, path in enumerate(pieces):
        audio = cached(cache, f"music:{path}", lambda wav, p=path: run(
            "ffmpeg", "-v", "error", "-i", str(p), "-ac", "1", "-ar", str(RATE), str(wav)))
        audio = audio[int(5 * RATE): int((5 + MUSIC_SECONDS) * RATE)]
        items.append(("music", "fit" if i % 2 == 0 else "held", path.name, audio))
    for i, path in enumerate(sorted(OPENMSX.glob("*.mid"))):
        audio = cached(cache, f"midi:{path}", lambda wav, p=path: run(
            "fluidsynth", "-ni", "-g", "0.6", "-r", str(RATE), "-F", str(wav), str(SOUNDFONT),
            str(p)))
        audio = audio[int(2 * RATE): int((2 + MUSIC_SECONDS) * RATE)]
        items.append(("music", "fit" if i % 2 == 0 else "held", path.name, audio))
    # Dense, distorted rock and metal: each song's stems (backing, guitar, any rhythm part)
    # mixed as the game plays them, all of it, as the other music has little of this kind.
    for i, song in enumerate(sorted(p.parent for p in FRETSONFIRE.rglob("song.ogg"))):
        stems = [song / f"{stem}.ogg" for stem in ("song", "guitar", "rhythm")
                 if (song / f"{stem}.ogg").is_file()]
        audio = cached(cache, f"fretsonfire:{song}", lambda wav, st=stems: run(
            "ffmpeg", "-v", "error", *[a for f in st for a in ("-i", str(f))], "-filter_complex",
            f"amix=inputs={len(st)}:duration=shortest", "-ac", "1", "-ar", str(RATE),
            str(wav)))
        items.append(("music", "fit" if i % 2 == 0 else "held",
                      f"{song.parent.name}: {song.name}", audio[int(5 * RATE):]))
    speeds = (140, 170, 200)
    for split, voices, source in (("fit", FIT_VOICES, "GPL-3"), ("held", HELD_VOICES,
                                                                  "Apache-2.0")):
        for v, voice in enumerate(voices):
            for j, chunk in enumerate(texts(source)[:4]):
                speed, pitch = speeds[(v + j) % 3], 35 + 10 * ((v + 2 * j) % 4)
                variant = voice + ("+f3" if (v + j) % 2 else "")
                audio = cached(cache, f"espeak:{variant}:{speed}:{pitch}:{source}:{j}",
                               lambda wav, t=chunk, vv=variant, s=speed, p=pitch: run(
                                   "espeak-ng", "-v", vv, "-s", str(s), "-p", str(p), "-w",
                                   str(wav), t))
                items.append(("speech", split, f"espeak {variant} {source} {j}", audio))
    for j, chunk in enumerate(texts("MPL-2.0")[:4]):
        def festival(wav: Path, t: str = chunk) -> None:
            txt = wav.with_suffix(".txt")
            txt.write_text(t)
            run("text2wave", str(txt), "-o", str(wav))
        items.append(("speech", "held", f"festival MPL-2.0 {j}",
                      cached(cache, f"festival:MPL-2.0:{j}", festival)))
    voices = [load_audio(p, RATE)[0] for p in sorted(ALSA_SOUNDS.glob("*.wav"))
              if p.name != "Noise.wav"]
    gap = np.zeros(int(0.3 * RATE), np.float32)
    person = np.concatenate([np.concatenate([v, gap]) for v in voices * 2])
    items.append(("speech", "held", "alsa-utils voice", person))
    items.append(("noise", "held", "alsa-utils Noise.wav",
                  load_audio(ALSA_SOUNDS / "Noise.wav", RATE)[0]))
    for split, levels in (("fit", (-40, -25, -12)), ("held", (-45, -30, -18, -10))):
        for colour in ("white", "pink", "brown"):
            for level in levels:
                gain = 10 ** (level / 20)
                seconds = "20" if split == "fit" else "17"
                audio = cached(cache, f"noise:{colour}:{seconds}", lambda wav, c=colour,
                               d=seconds: run("sox", "-n", "-r", str(RATE), str(wav), "synth",
                                              d, f"{c}noise"))
                audio = audio / (np.sqrt(np.mean(audio ** 2)) + 1e-12) * gain
                items.append(("noise", split, f"{colour} noise {level} dBFS",
                              audio.astype(np.float32)))
    for split, freqs in (("fit", (100, 440, 1000, 3000)), ("held", (60, 250, 1000, 5000))):
        for shape in ("sine", "square", "sawtooth"):
            for f in freqs:
                audio = cached(cache, f"tone:{shape}:{f}", lambda wav, sh=shape, ff=f: run(
                    "sox", "-n", "-r", str(RATE), str(wav), "synth", "12", sh, str(ff),
                    "vol", "0.3"))
                items.append(("tone", split, f"{shape} {f} Hz", audio))
    return items + mixtures(items)


def mix(speech: np.ndarray, bed: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech`` with ``bed`` under it, ``snr_db`` quieter (RMS over the speech's length)."""
    bed = np.resize(bed, len(speech))
    gain = np.sqrt(np.mean(speech ** 2) / (np.mean(bed ** 2) + 1e-20)) / 10 ** (snr_db / 20)
    return (speech + gain * bed).astype(np.float32)


def mixtures(items: list) -> list:
    """For the fit: its speech again over its noise (10 to 25 dB under the voice: a phone-in,
    a report from the street) and over its music (15 dB under: a talk show's bed), still
    speech. Held-out mixtures are only reported (``main``), never fitted."""
    speech = [(n, a) for k, sp, n, a in items if k == "speech" and sp == "fit"]
    noise = [a for k, sp, n, a in items if k == "noise" and sp == "fit"]
    music = np.concatenate([a for k, sp, n, a in items if k == "music" and sp == "fit"])
    out = []
    for i, (name, audio) in enumerate(speech):
        snr = (25, 15, 10)[i % 3]
        out.append(("speech", "fit", f"{name} + noise {snr} dB",
                    mix(audio, noise[i % len(noise)], snr)))
        start = (i * 977 * RATE) % (len(music) - len(audio))
        out.append(("speech", "fit", f"{name} + music 15 dB",
                    mix(audio, music[start: start + len(audio)], 15)))
    return out


def windows(audio: np.ndarray) -> np.ndarray:
    """Feature rows of the 3-s windows of ``audio``, one a second."""
    options = content_options(RATE)
    frames = compute_logmel(audio, options)
    rate = RATE / options.hop_length
    width, hop = round(WINDOW_S * rate), round(HOP_S * rate)
    rows = [window_features(frames[end - width: end], rate)
            for end in range(width, len(frames) + 1, hop)]
    return np.array(rows).reshape(-1, len(FEATURES))


def fit(x: np.ndarray, y: np.ndarray, classes: int, hidden: int = 16, l2: float = 1e-4,
        steps: int = 4000, lr: float = 0.01, seed: int = 0) -> ContentModel:
    """Sixteen tanh units and a softmax, each class weighted equally, full-batch Adam."""
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = (x - mean) / scale
    counts = np.bincount(y, minlength=classes)
    weight = (len(y) / (classes * counts))[y][:, None] / len(y)
    onehot = np.eye(classes)[y]
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal((z.shape[1], hidden)) / np.sqrt(z.shape[1]), np.zeros(hidden),
              rng.standard_normal((hidden, classes)) / np.sqrt(hidden), np.zeros(classes)]
    first = [np.zeros_like(p) for p in params]
    second = [np.zeros_like(p) for p in params]
    for step in range(1, steps + 1):
        w1, b1, w2, b2 = params
        h = np.tanh(z @ w1 + b1)
        logits = h @ w2 + b2
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) * weight
        gh = g @ w2.T * (1 - h ** 2)
        grads = [z.T @ gh + l2 * w1, gh.sum(axis=0), h.T @ g + l2 * w2, g.sum(axis=0)]
        for i, grad in enumerate(grads):
            first[i] = 0.9 * first[i] + 0.1 * grad
            second[i] = 0.999 * second[i] + 0.001 * grad ** 2
            params[i] = params[i] - lr * (first[i] / (1 - 0.9 ** step)) / (
                np.sqrt(second[i] / (1 - 0.999 ** step)) + 1e-8)
    return ContentModel(CLASSES, FEATURES, mean, scale, *params)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "streamtag-content-material")
    parser.add_argument("--write", action="store_true",
                        help=f"store the weights in streamtag/engine/{WEIGHTS_FILE}")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    items = material(args.cache)
    rows: dict[str, list] = {"fit": [], "held": []}
    for kind, split, name, audio in items:
        feats = windows(audio)
        rows[split].append((kind, name, feats))
    x = np.concatenate([f for _, _, f in rows["fit"]])
    y = np.concatenate([[CLASSES.index(k)] * len(f) for k, _, f in rows["fit"]])
    model = fit(x, y, len(CLASSES))
    for split in ("fit", "held"):
        print(f"\n{split}: rows are the truth, columns the classifier's windows")
        print(f"{'':8}" + "".join(f"{c:>8}" for c in CLASSES) + "   correct")
        for kind in CLASSES:
            feats = [f for k, _, f in rows[split] if k == kind]
            if not feats:
                continue
            got = np.argmax(model.probabilities(np.concatenate(feats)), axis=1)
            counts = np.bincount(got, minlength=len(CLASSES))
            print(f"{kind:8}" + "".join(f"{c:8d}" for c in counts)
                  + f"   {counts[CLASSES.index(kind)] / counts.sum():7.1%}")
    print("\nheld out, per piece (share of windows right):")
    for kind, name, feats in rows["held"]:
        got = np.argmax(model.probabilities(feats), axis=1)
        right = float(np.mean(got == CLASSES.index(kind))) if len(got) else float("nan")
        if right < 0.95:
            print(f"  {kind:7} {name:40} {right:6.1%} of {len(got)}")
    print("\nnot fitted, not a class: held-out speech mixed with held-out music or pink noise "
          "(speech level over the other's, RMS), share of windows per class:")
    speech = np.concatenate([a for k, sp, n, a in items if k == "speech" and sp == "held"
                             and n.startswith("festival")])
    music = np.concatenate([a for k, sp, n, a in items if k == "music" and sp == "held"])
    noise = [a for k, sp, n, a in items if n == "pink noise -18 dBFS"][0]
    for name, bed in (("music", music), ("pink noise", noise)):
        for snr in (20, 10, 0, -10):
            got = np.argmax(model.probabilities(windows(mix(speech, bed, snr))), axis=1)
            counts = np.bincount(got, minlength=len(CLASSES)) / len(got)
            print(f"  speech {snr:+d} dB over {name:10}: " + ", ".join(
                f"{c} {v:.0%}" for c, v in zip(CLASSES, counts, strict=True)))
    if args.write:
        out = Path(__file__).resolve().parent.parent / "streamtag" / "engine" / WEIGHTS_FILE
        out.write_text(model.to_json())
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
