"""How a venue's screen follows real music: a programme of recordings through the engine as the
daemon serves it (frontend levels, model, smoother, mood tracker), and what the screen shows.

    python benchmarks/mood_follow.py [--model musicnn-msd] [--gap 8] FILE ...
    python benchmarks/mood_follow.py --whole FILE ...
    python benchmarks/mood_follow.py --clear FILE ... --speech VOICE ...

The programme is ``--seconds`` of each file (from ``--start``), with ``--gap`` seconds of digital
silence before every second file (so both a change after a break and a change without one are
measured), then a loud, dense, fast synthetic piece and a quiet, sparse, slow one. Per piece it
prints the words shown (with the seconds into the piece each appeared), how long the first
change of the main word took and the genre line. ``--whole`` plays each file whole on its own
and counts the changes of the words and of the genre line after the first 20 s, per minute:
flicker shows there. ``--clear`` plays the music files in turn with, between them, speech
(``--speech`` files joined into items of ``--speech-seconds``, 0.3 s apart, as
tests/support/speech_material.py joins them) and dead air (``--dead-air`` seconds of digital
silence) by turns, and prints how many seconds of audio after each item began the words and the
genre line were gone, and on what share of the item's windows words were shown. docs/venue.md
has the figures for Debian's singularity-music (``apt-get install singularity-music``) and, for
speech, warzone2100-data's tutorial (``unzip -j /usr/share/games/warzone2100/base.wz
'audio/tutorial/*' -d voices``).
"""

from __future__ import annotations

import argparse
import collections
import os

import numpy as np
from moods import Collect  # benchmarks/moods.py, beside this script

from streamtag.audio.files import load_audio
from streamtag.audio.synthetic import SyntheticConfig, generate_clip
from streamtag.catalog.installed import resolve_model
from streamtag.engine.batching import Engine
from streamtag.engine.config import EngineConfig
from streamtag.model.inference import InferenceModel

LOUD_DENSE = {"drums": True, "tempo_bpm": 170.0, "level_dbfs": -8.0, "density": 0.95,
              "brightness": 0.9, "articulation": "plucked", "mode": "minor"}
QUIET_SPARSE = {"drums": False, "tempo_bpm": 66.0, "level_dbfs": -34.0, "density": 0.15,
                "brightness": 0.2, "articulation": "sustained", "mode": "major"}




def run(model: InferenceModel, audio: np.ndarray) -> list[tuple[float, tuple, tuple]]:
    """(end_s, words, genres) of every window of ``audio`` played as one stream (a live
    stream's window is scored as its last sample arrives: ``end_s`` is when a screen shows
    it, but for the forward pass and the page's cross-fade)."""
    rate = int(model.sample_rate)
    sink = Collect()
    engine = Engine(model, sink, EngineConfig(max_batch=4))
    engine.add_stream("s")
    for i in range(0, len(audio), rate):
        engine.accept("s", audio[i: i + rate], wait=False)
        # scored as it comes, as the daemon keeps up with a live stream (the speech detector
        # keeps a stream's last 32 s waiting, no more)
        engine.drain()
    engine.finish_stream("s")
    engine.drain()
    return [(r.end_sample / rate, tuple(r.mood["words"]), tuple(r.mood["genres"]), r.content)
            for r in sink.results if r.mood is not None]


def runs(rows, field: int, begin: float, end: float, before=None) -> list[tuple[float, tuple]]:
    """The values of ``field`` shown in (begin, end], each with the seconds into it it came."""
    out = [] if before is None else [(None, before)]
    for row in rows:
        if begin < row[0] <= end and (not out or out[-1][1] != row[field]):
            out.append((round(row[0] - begin, 1), row[field]))
    return out[1:] if before is not None else out


def programme(model: InferenceModel, args) -> None:
    rate = int(model.sample_rate)
    pieces = []
    for k, path in enumerate(args.files):
        if k % 2 and args.gap > 0:
            pieces.append(("(silence)", np.zeros(int(args.gap * rate), np.float32)))
        audio, _ = load_audio(path, rate)
        begin = int(args.start * rate)
        pieces.append((os.path.basename(path), audio[begin: begin + int(args.seconds * rate)]))
    for name, overrides in (("synthetic loud, dense, fast", LOUD_DENSE),
                            ("synthetic quiet, sparse, slow", QUIET_SPARSE)):
        config = SyntheticConfig(sample_rate=rate, clip_seconds=args.seconds)
        pieces.append((name, generate_clip(7, config, overrides)[0]))
    rows = run(model, np.concatenate([np.asarray(a, np.float32) for _, a in pieces]))
    print(f"model {model.name}: words shown (seconds into the piece), first change of the "
          "main word, genre line")
    t = 0.0
    seen = collections.Counter()
    for name, audio in pieces:
        end = t + len(audio) / rate
        before = [r for r in rows if r[0] <= t]
        last = before[-1][1] if before else None
        words = runs(rows, 1, t, end)
        change = next((s for s, w in words if last is None or w[:1] != last[:1]), None)
        genres = runs(rows, 2, t, end)
        print(f"{name[:30]:30} " + ", ".join(f"{' · '.join(w) or '-'} ({s:g})" for s, w in words)
              + f" | first change {'-' if change is None else f'{change:g} s'} | genre "
              + ", ".join(f"{' / '.join(g) or '-'} ({s:g})" for s, g in genres))
        seen.update(w for r in rows if t < r[0] <= end for w in r[1])
        t = end
    print(f"display words shown: {len(seen)} ({', '.join(sorted(seen))})")


def whole(model: InferenceModel, args) -> None:
    rate = int(model.sample_rate)
    minutes = words = genres = 0.0
    for path in args.files:
        audio, _ = load_audio(path, rate)
        rows = [r for r in run(model, audio) if r[0] > 20.0]
        if len(rows) < 2:
            continue
        w = sum(a[1] != b[1] for a, b in zip(rows, rows[1:], strict=False))
        g = sum(a[2] != b[2] for a, b in zip(rows, rows[1:], strict=False))
        m = (rows[-1][0] - rows[0][0]) / 60.0
        minutes, words, genres = minutes + m, words + w, genres + g
        print(f"{os.path.basename(path)[:30]:30} {m:5.1f} min  word changes {w:2d}  genre "
              f"changes {g:2d}")
    if minutes:
        print(f"in all {minutes:.1f} min: {words / minutes:.2f} word changes and "
              f"{genres / minutes:.2f} genre changes a minute")


def clear(model: InferenceModel, args) -> None:
    rate = int(model.sample_rate)
    voices = [load_audio(path, rate)[0] for path in args.speech]
    if not voices:
        raise SystemExit("--clear needs --speech FILE ...")
    gap = np.zeros(round(0.3 * rate), np.float32)
    items, item, k = [], [], 0
    while len(items) < len(args.files):
        item += [voices[k % len(voices)], gap]
        k += 1
        if sum(len(a) for a in item) >= args.speech_seconds * rate:
            items.append(np.concatenate(item))
            item = []
    pieces = []
    for n, path in enumerate(args.files):
        audio, _ = load_audio(path, rate)
        begin = int(args.start * rate)
        pieces.append(("music", os.path.basename(path),
                       audio[begin: begin + int(args.seconds * rate)]))
        if n % 2 == 0:
            pieces.append(("speech", f"speech {len(items[n]) / rate:.1f} s", items[n]))
        else:
            pieces.append(("dead air", f"dead air {args.dead_air:g} s",
                           np.zeros(int(args.dead_air * rate), np.float32)))
    pieces.append(("music", "(the first again)", pieces[0][2]))
    rows = run(model, np.concatenate([np.asarray(a, np.float32) for _, _, a in pieces]))
    print(f"model {model.name}: seconds of audio after speech or dead air began until the words "
          "and the genre line were gone; share of its windows that showed words")
    t = 0.0
    gone: dict[str, list[float]] = collections.defaultdict(list)
    for kind, name, audio in pieces:
        end = t + len(audio) / rate
        if kind != "music":
            inside = [r for r in rows if t < r[0] <= end]
            # (where the words outlast the item, the next piece's windows say when they went)
            after = [r for r in rows if t < r[0] <= end + args.seconds]
            words = next((r[0] - t for r in after if not r[1]), None)
            genres = next((r[0] - t for r in after if not r[2]), None)
            shown = sum(bool(r[1]) for r in inside) / max(1, len(inside))
            before = [r for r in rows if r[0] <= t]
            had = before[-1][1:] if before else ((), ())
            print(f"{name:22} after {' · '.join(had[0]) or '-'} / {' / '.join(had[1]) or '-'}: "
                  f"words gone {'never' if words is None else f'{words:.1f} s'}, genre line "
                  f"{'never' if genres is None else f'{genres:.1f} s'}, words on "
                  f"{shown:.0%} of its windows")
            if args.verbose:
                print("    " + ", ".join(f"{r[0] - t:.1f} {r[3]} {' · '.join(r[1]) or '-'}"
                                         for r in after[:8]))
            gone[kind].append(float("inf") if words is None else words)
        t = end
    for kind, seconds in gone.items():
        print(f"{kind}: words gone {min(seconds):.1f}-{max(seconds):.1f} s after it began")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--model", default="musicnn-msd")
    ap.add_argument("--start", type=float, default=20.0, help="seconds skipped in each file")
    ap.add_argument("--seconds", type=float, default=50.0, help="seconds played of each")
    ap.add_argument("--gap", type=float, default=8.0, help="silence before every second file")
    ap.add_argument("--whole", action="store_true", help="each file whole: changes a minute")
    ap.add_argument("--clear", action="store_true",
                    help="speech and dead air between the files: how soon the words go")
    ap.add_argument("--speech", nargs="+", default=[], metavar="VOICE",
                    help="recorded voices that --clear joins into its speech items")
    ap.add_argument("--speech-seconds", type=float, default=10.0, help="each speech item, at least")
    ap.add_argument("--dead-air", type=float, default=10.0, help="each stretch of dead air")
    ap.add_argument("--verbose", action="store_true",
                    help="--clear: each item's first windows, their content and words")
    args = ap.parse_args()
    model = InferenceModel.load(resolve_model(args.model), backend="onnxruntime")
    (whole if args.whole else clear if args.clear else programme)(model, args)


if __name__ == "__main__":
    main()
