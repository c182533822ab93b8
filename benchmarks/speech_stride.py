"""How often silero-vad's detector must run: a voice after a minute of music, and music that
is not speech, at one chunk in 1, 2, 3 or 4 (``streamtag.engine.speech.STRIDE``).

    apt-get install singularity-music openttd-openmsx fluidsynth fluid-soundfont-gm \
        warzone2100-data
    streamtag models install speech
    python benchmarks/speech_stride.py [--strides 1 2 3 4] [--reset-s 8] [--cache DIR]

Each stream runs alone (batch 1) with its state carried from step to step and reset every
``--reset-s`` (the engine's ``RESET_STEPS``, 8 s); a window of 3 s every second is speech
when ``SPEECH_SHARE`` of its steps are over ``THRESHOLD``, as the engine decides. Printed per
stride:

- **a voice after music**: 60-66 s of each of singularity-music's 16 pieces, then the first
  12 s of warzone2100's tutorial (voice acting) at two phases; how many seconds into the voice
  the first window that is speech ends (the engine's windows end every second, so 2 s is as
  early as a 3-s window with 40 % of speech in it can be), and how many windows of the music
  before it are speech;
- **music alone**: the windows called speech in each of openttd-openmsx's 31 MIDI files
  rendered with FluidR3 GM (General MIDI's organs, strings and sung vowels are what a
  detector of speech hears as a voice) and in singularity's pieces.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import content_fit  # benchmarks/content_fit.py, beside this script: its material's paths
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.speech_material import warzone_tutorial  # noqa: E402

from streamtag.audio.files import load_audio  # noqa: E402
from streamtag.engine.speech import (  # noqa: E402
    CHUNK,
    CONTEXT,
    RESET_STEPS,
    SPEECH_RATE,
    SPEECH_SHARE,
    STATE,
    STEP,
    THRESHOLD,
    SpeechPlan,
)

RATE = SPEECH_RATE
WINDOW_S, HOP_S = 3, 1


def probabilities(detector, audio: np.ndarray, stride: int, reset_s: float) -> np.ndarray:
    """The detector's probability on the last chunk of every ``stride`` chunks, the state
    back to zeros every ``reset_s`` (0: never)."""
    step = stride * CHUNK
    reset = round(reset_s * RATE / step) if reset_s else 0
    state = np.zeros((2, 1, STATE), np.float32)
    out = np.zeros(len(audio) // step, np.float32)
    for s in range(len(out)):
        end = (s + 1) * step
        if end < CONTEXT + CHUNK:
            continue
        if reset and s % reset == 0:
            state = np.zeros((2, 1, STATE), np.float32)
        p, state = detector.run(audio[None, end - CONTEXT - CHUNK:end], state)
        out[s] = p[0]
    return out


def windows_of(detector, audio: np.ndarray, stride: int, reset_s: float
               ) -> list[tuple[int, bool]]:
    return speech_windows(probabilities(detector, audio, stride, reset_s), stride, len(audio))


def speech_windows(probs: np.ndarray, stride: int, length: int) -> list[tuple[int, bool]]:
    """(end sample, speech?) of each 3-s window every second."""
    step = stride * CHUNK
    out = []
    for end in range(WINDOW_S * RATE, length + 1, HOP_S * RATE):
        first, last = -(-(end - WINDOW_S * RATE) // step), end // step
        share = float(np.mean(probs[first:last] > THRESHOLD)) if last > first else 0.0
        out.append((end, share >= SPEECH_SHARE))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reset-s", type=float, default=RESET_STEPS * STEP / RATE,
                        help="the state back to zeros this often, seconds (0: never; default: "
                             "as served)")
    parser.add_argument("--strides", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "streamtag-content-material")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    plan = SpeechPlan.installed()
    if plan.detector is None:
        print(plan.note, file=sys.stderr)
        return 1
    voice = warzone_tutorial(RATE)[: 12 * RATE]
    pieces = sorted(content_fit.SINGULARITY.glob("*.ogg"))
    music = {p.stem: load_audio(p, RATE)[0] for p in pieces}
    rendered = {p.stem: content_fit.midi(args.cache, p)
                for p in sorted(content_fit.OPENMSX.glob("*.mid"))}
    print(f"# {plan.note}; a window is speech when {SPEECH_SHARE:.0%} of its steps are over "
          f"{THRESHOLD}; the state reset every {args.reset_s:g} s (0: never)")
    print("\n| chunks run | voice after music: s to speech (median, worst, within 3 s) "
          "| music windows before it called speech | openmsx MIDI: windows speech "
          "| singularity: windows speech | the worst MIDI files |")
    print("|---|---|---|---|---|---|")
    for stride in args.strides:
        delays, before = [], [0, 0]
        for i, audio in enumerate(music.values()):
            for phase in (0.0, 3.3):
                head = audio[20 * RATE: round((80 + phase + 0.7 * (i % 5)) * RATE)]
                joined = np.concatenate([head, voice]).astype(np.float32)
                windows = windows_of(plan.detector, joined, stride, args.reset_s)
                onset = len(head)
                called = [end for end, speech in windows if end > onset and speech]
                delays.append((called[0] - onset) / RATE if called else float("inf"))
                early = [speech for end, speech in windows if end <= onset]
                before[0] += sum(early)
                before[1] += len(early)
        worst = []
        midi_total = [0, 0]
        for name, audio in rendered.items():
            windows = windows_of(plan.detector, audio, stride, args.reset_s)
            called = sum(speech for _, speech in windows)
            midi_total[0] += called
            midi_total[1] += len(windows)
            if called:
                worst.append((called, f"{name} {called}/{len(windows)}"))
        sing = [0, 0]
        for audio in music.values():
            windows = windows_of(plan.detector, audio, stride, args.reset_s)
            sing[0] += sum(speech for _, speech in windows)
            sing[1] += len(windows)
        d = np.array(delays)
        print(f"| 1 in {stride} | {np.median(d):.1f}, {d.max():.1f}, "
              f"{np.count_nonzero(d <= 3.0)} of {len(d)} | {before[0]} of {before[1]} | "
              f"{midi_total[0]} of {midi_total[1]} | {sing[0]} of {sing[1]} | "
              f"{', '.join(text for _, text in sorted(worst, reverse=True)[:4])} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
