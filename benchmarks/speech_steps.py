"""What a step of silero-vad's detector costs, served three ways side by side in one run:

    streamtag models install speech
    python benchmarks/speech_steps.py [--streams 1 2 4 8 16 32] [--steps 8 17 33] [--seconds 3]

- **graph**: silero's whole graph (its own STFT as a convolution), one ``session.run`` per
  step for every stream;
- **magnitudes**: the graph from its STFT's magnitudes on, the C++ core's FFT before it, one
  ``session.run`` per step for every stream;
- **served**: what the engine runs (``streamtag.engine.speech.run_tracks``): the encoder as
  matrix products over every step of every stream in one call, then the LSTM decoder in the
  C++ core over all of them in one more, numpy's BLAS on one thread.

Each case feeds every stream ``steps`` steps of noise (a turn of the engine finds 8-16 streams
with 17-33 steps each waiting, at one 0.5-s block a source), runs them, and repeats for
``--seconds``; printed: the process's CPU time per step (a step is 64 ms of one stream's
audio; CPU time counts every thread, BLAS's own included) and each way's ratio to the graph.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from streamtag.engine.speech import (
    CHUNK,
    CONTEXT,
    SPEECH_RATE,
    STATE,
    STEP,
    SpeechPlan,
    SpeechTrack,
    run_tracks,
    speech_path,
    split_graph,
)


def per_step(run, steps_each: int, streams: int, seconds: float) -> float:
    """CPU ms per step of ``run()``, which runs ``steps_each`` steps of ``streams``."""
    run()
    started, clock, rounds = time.perf_counter(), time.process_time(), 0
    while time.perf_counter() - started < seconds:
        run()
        rounds += 1
    return (time.process_time() - clock) / (rounds * steps_each * streams) * 1e3


def measure(detector: Any, whole: Any, from_magnitudes: Any, steps: int,
            streams: int, seconds: float, rng: np.random.Generator) -> tuple[float, ...]:
    """CPU ms a step of the three ways, for ``streams`` streams of ``steps`` steps each."""
    audio = (0.1 * rng.standard_normal(steps * STEP)).astype(np.float32)
    rows = audio.reshape(steps, STEP)[:, STEP - CHUNK - CONTEXT:]
    batch = np.ascontiguousarray(np.repeat(rows[:, None], streams, axis=1))
    rate = np.array(SPEECH_RATE, np.int64)

    def stepped(session: Any, feed: Any) -> Any:
        def run() -> None:
            state = np.zeros((2, streams, STATE), np.float32)
            for k in range(steps):
                _, state = session.run(None, {**feed(batch[k]), "state": state})
        return run

    tracks = [SpeechTrack(SPEECH_RATE) for _ in range(streams)]

    def served() -> None:
        for track in tracks:
            track.accept(audio)
        with detector.lock:
            run_tracks(detector, tracks)

    return (per_step(stepped(whole, lambda x: {"input": x, "sr": rate}), steps, streams,
                     seconds),
            per_step(stepped(from_magnitudes, lambda x: {"magnitude": detector.stft.magnitudes(x)}),
                     steps, streams, seconds),
            per_step(served, steps, streams, seconds))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 17, 33])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    import onnxruntime as ort

    plan = SpeechPlan.installed()
    if plan.detector is None:
        raise SystemExit(plan.note)
    detector = plan.detector
    graph = speech_path().read_bytes()
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    whole = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    trimmed, _ = split_graph(graph)
    from_magnitudes = ort.InferenceSession(trimmed, options,
                                           providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    print(f"# {detector.described}; the served encoder: "
          f"{detector.encoder.get_modelmeta().graph_name if detector.encoder else 'none'}, "
          f"the decoder in the C++ core: {detector.cell is not None}")
    print("| streams | steps each | graph, ms a step | magnitudes | served | magnitudes / graph "
          "| served / graph |")
    print("|---|---|---|---|---|---|---|")
    for steps in args.steps:
        for streams in args.streams:
            graph_ms, magnitudes_ms, served_ms = measure(
                detector, whole, from_magnitudes, steps, streams, args.seconds, rng)
            print(f"| {streams} | {steps} | {graph_ms:.4f} | {magnitudes_ms:.4f} | "
                  f"{served_ms:.4f} | {magnitudes_ms / graph_ms:.2f} | "
                  f"{served_ms / graph_ms:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
