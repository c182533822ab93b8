"""The mood a venue's screen shows for real recordings: each file through the engine as the
daemon serves it (frontend levels, model, smoother, mood tracker), printing per file its level,
onset rate, energy, the mood words it settles on and the active tags, as a table to check by
ear (docs/venue.md, "Checked on real music").

    python benchmarks/moods.py [--model musicnn-msd] [--start 20] [--seconds 90] FILE ...

Debian ships freely licensed game music that covers calm and busy pieces, e.g.
``apt-get install singularity-music asc-music hyperrogue-music``. Also prints the cost of the
mood per window (the tracker's update, in microseconds).
"""

from __future__ import annotations

import argparse
import collections
import os
import time

import numpy as np

from streamtag.audio.files import AudioDecodeError, load_audio
from streamtag.catalog.installed import resolve_model
from streamtag.engine.batching import Engine, EngineSink
from streamtag.engine.config import EngineConfig
from streamtag.model.inference import InferenceModel


class Collect(EngineSink):
    def __init__(self) -> None:
        self.results = []

    def on_window(self, result) -> None:
        self.results.append(result)

    def on_stream_end(self, stream_id, events, end_s) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--model", default="musicnn-msd")
    ap.add_argument("--start", type=float, default=20.0, help="seconds skipped at the start")
    ap.add_argument("--seconds", type=float, default=60.0, help="seconds tagged per file")
    args = ap.parse_args()
    model = InferenceModel.load(resolve_model(args.model), backend="onnxruntime")
    rate = int(model.sample_rate)
    plan = Engine(model, Collect()).mood_plan
    print(f"model {model.name}: mood tags {', '.join(plan.mood_tags)}")
    print(f"{'file':34} {'rms dBFS':>8} {'onsets/s':>8} {'energy':>6}  {'valence':>7} "
          f"{'arousal':>7}  mood (from s)  |  active tags")
    costs = []
    for path in args.files:
        sink = Collect()
        engine = Engine(model, sink, EngineConfig(max_batch=4))
        try:
            audio, _ = load_audio(path, rate)
        except AudioDecodeError as exc:
            print(f"{os.path.basename(path)[:34]:34} {exc}")
            continue
        begin = int(args.start * rate)
        audio = audio[begin: begin + int(args.seconds * rate)]
        engine.add_stream("s")
        for i in range(0, len(audio), rate):
            engine.accept("s", audio[i: i + rate], wait=False)
        engine.finish_stream("s")
        engine.drain()
        res = sink.results
        if not res:
            print(f"{os.path.basename(path)[:34]:34} too short")
            continue
        audio_rows = [r.audio for r in res if r.audio]
        words = [(tuple(r.mood["words"]), r.mood["since_s"]) for r in res if r.mood]
        changes = [w for k, w in enumerate(words) if k == 0 or w[0] != words[k - 1][0]]
        active = collections.Counter(t for r in res for t in r.active)
        last = res[-1].mood or {}
        print(f"{os.path.basename(path)[:34]:34} "
              f"{np.mean([a['rms_dbfs'] for a in audio_rows]):8.1f} "
              f"{np.mean([a['onset_rate_hz'] for a in audio_rows]):8.2f} "
              f"{np.mean([a['energy'] for a in audio_rows]):6.2f}  "
              f"{last.get('valence', 0):7.2f} {last.get('arousal', 0):7.2f}  "
              + ", ".join(f"{' · '.join(w) or '(none)'} ({s:.0f})" for w, s in changes)
              + "  |  " + ", ".join(f"{t} {n / len(res):.0%}" for t, n in active.most_common(5)))
        tracker_plan = engine.mood_plan
        if tracker_plan is not None:
            from streamtag.engine.mood import MoodTracker
            tracker = MoodTracker(tracker_plan)
            smoothed = res[-1].smoothed
            t0 = time.perf_counter()
            for k in range(2000):
                tracker.update(float(k), smoothed, -20.0, 0.5)
            costs.append((time.perf_counter() - t0) / 2000 * 1e6)
    if costs:
        print(f"mood tracker: {np.median(costs):.1f} us per window")


if __name__ == "__main__":
    main()
