"""Speech by silero-vad's detector against the content network's: each window's decision per
source, on recorded voices, synthesised ones, music, noise and speech over music, with the
window's share of speech steps that ``SPEECH_SHARE`` is chosen from.

    apt-get install ...   # content_fit.py's packages
    streamtag models install speech
    python benchmarks/content_speech.py [--cache DIR]

Material (16 kHz mono, windows of 3 s every 1 s, as the engine cuts them): content_fit.py's
(music: singularity-music, openttd-openmsx rendered with FluidR3 GM, the fretsonfire metal and
rock songs, asterisk's music on hold; speech: espeak-ng, festival, alsa-utils' channel names,
asterisk's telephone prompts and words in five languages, warzone2100-data's voice actors,
gcin-voice's Mandarin syllables; noise: sox, Noise.wav, recorded ambience), without content_fit's
mixtures. The network's column is the one that decides speech alone (``WEIGHTS_FILE``), the
detector's column has the network served beside it (``DETECTOR_WEIGHTS_FILE``) decide the rest.
The detector was trained elsewhere; none of this was fitted to it, only the two numbers
(``THRESHOLD``, silero's own default, and ``SPEECH_SHARE``) were chosen on it. The level's rules
(silence, steady tones) are left out: they come first in the engine whatever decides the rest.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import content_fit  # noqa: E402 - benchmarks/content_fit.py, beside this script
import numpy as np

from streamtag.engine.content import CLASSES, MUSIC, SPEECH, ContentModel, ContentTracker
from streamtag.engine.speech import SPEECH_SHARE, SpeechPlan, SpeechTrack, run_tracks

RATE = content_fit.RATE
WINDOW_S, HOP_S = content_fit.WINDOW_S, content_fit.HOP_S
BLOCK = 8000  # samples fed at a time
SHARES = (0.2, 0.3, 0.4, 0.5, 0.6)


def group_of(kind: str, name: str) -> str:
    """content_fit.py's source of an item, with noise and tones each one group."""
    if kind in ("noise", "tone"):
        return kind
    if name == "alsa-utils voice":
        return "alsa-utils channel names"
    return content_fit.source_of(kind, name)


def decide(audio: np.ndarray, model: ContentModel, plan: SpeechPlan | None
           ) -> tuple[list[str], list[float]]:
    """Each window's decision (the network's, or with ``plan`` the detector's speech over
    the network's other classes, music where the voice holds its notes, as the engine decides)
    and its share of speech steps (empty without ``plan``)."""
    tracker = ContentTracker(model, RATE, speech=plan is None)
    track = None if plan is None else SpeechTrack(RATE)
    width, hop = round(WINDOW_S * RATE), round(HOP_S * RATE)
    ends = iter(range(width, len(audio) + 1, hop))
    end = next(ends, None)
    kinds, shares = [], []
    for i in range(0, len(audio), BLOCK):
        block = audio[i:i + BLOCK]
        tracker.accept(block)
        if track is not None and plan is not None and plan.detector is not None:
            track.accept(block)
            run_tracks(plan.detector, [track])
        while end is not None and end <= i + BLOCK:
            kind = tracker.classify(end - width, end)
            share = None if track is None else track.share(end - width, end)
            if kind is not None:
                if share is not None:
                    shares.append(share)
                    if share >= SPEECH_SHARE:  # a voice that holds its notes is music
                        kind = MUSIC if track is not None and track.sung(end) else SPEECH
                kinds.append(kind)
            end = next(ends, None)
    return kinds, shares


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "streamtag-content-material")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    plan = SpeechPlan.installed()
    if plan.detector is None:
        print(plan.note, file=sys.stderr)
        return 1
    alone, beside = ContentModel.load(), ContentModel.load(beside_detector=True)
    items = [(k, group_of(k, n), n, a) for k, _, n, a in content_fit.material(args.cache)
             if "+" not in n]  # content_fit's mixtures are its fit's; ours are below
    groups: dict[tuple[str, str], dict] = {}
    pieces = []  # music pieces the detector calls speech in some windows
    for kind, group, name, audio in items:
        row = groups.setdefault((kind, group), {"network": [], "detector": [], "shares": []})
        row["network"] += decide(audio, alone, None)[0]
        kinds, shares = decide(audio, beside, plan)
        row["detector"] += kinds
        row["shares"] += shares
        called = sum(k == SPEECH for k in kinds)
        if kind == "music" and called:
            pieces.append(f"{name} {called} of {len(kinds)}")
    print(f"# {plan.note}; a window is speech when {SPEECH_SHARE:.0%} of its steps are")
    print("\n| truth | source | windows | network: speech | network: music | detector: speech "
          "| detector: music | detector: noise / tone |")
    print("|---|---|---|---|---|---|---|---|")
    for (kind, group), row in groups.items():
        net, det = row["network"], row["detector"]

        def pct(kinds: list[str], *classes: str) -> str:
            return f"{100 * sum(k in classes for k in kinds) / max(1, len(kinds)):.1f} %"

        print(f"| {kind} | {group} | {len(det)} | {pct(net, 'speech')} | {pct(net, 'music')} | "
              f"{pct(det, 'speech')} | {pct(det, 'music')} | {pct(det, 'noise', 'tone')} |")
    print("\nwindows called speech by the share of their steps that are speech (the choice of "
          "SPEECH_SHARE):")
    print("| truth | source | " + " | ".join(f">= {s:.0%}" for s in SHARES) + " |")
    print("|---|---|" + "---|" * len(SHARES))
    for (kind, group), row in groups.items():
        shares = np.array(row["shares"])
        print(f"| {kind} | {group} | " + " | ".join(
            f"{100 * np.mean(shares >= s):.1f} %" for s in SHARES) + " |")
    print("\nmusic pieces with windows called speech: " + "; ".join(pieces))
    print("\nspeech over singularity-music's pieces (speech level over the music's, RMS), "
          "the windows' decisions:")
    speech = np.concatenate([a for k, _, n, a in items if n.startswith("festival")])
    voice = np.concatenate([a for _, g, n, a in items if n == "warzone2100-data: tutorial"])
    music = np.concatenate([a for k, g, n, a in items if k == "music"
                            and g == "singularity-music"])
    for name, talk in (("festival", speech), ("warzone2100 tutorial", voice[: 120 * RATE])):
        for snr in (20, 10, 0, -10):
            kinds = decide(content_fit.mix(talk, music, snr), beside, plan)[0]
            got = {c: sum(k == c for k in kinds) / len(kinds) for c in CLASSES}
            print(f"  {name} {snr:+d} dB over music: " + ", ".join(
                f"{c} {v:.0%}" for c, v in got.items() if v))
    return 0


if __name__ == "__main__":
    sys.exit(main())
