"""The scoring path outside the forward, warm and cold: smoothing and publishing one window.

What the engine does for each scored window besides the forward (``Smoother.update``, the
active tags, ``Publisher.publish_scores`` of a 50-tag message to a real PUB socket on
127.0.0.1) is timed in thread CPU time, one thread, 1. in a loop on its own (warm), 2. right
after something else ran in the same thread: a forward of the shipped default model on ONNX
Runtime, a sweep over 64 MB of memory, a few hundred small matrix products, or a 3 ms sleep,
3. for the windows of one batch after each forward, at batch 1, 2, 4 and 8 (only the first
window after the forward runs cold), and 4. single steps of that path, each warm and as the
first thing after a forward: what a forward does to everything that follows it. Each case is
run twice, interleaved, and printed with the machine's load average. Nothing here asserts a
time.

    python benchmarks/scoring_path.py [--windows 200]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
from machine import cpu_name  # noqa: E402 - benchmarks/machine.py, beside this script

from streamtag.catalog.shipped import default_model_path  # noqa: E402
from streamtag.engine.smoothing import Smoother, SmoothingConfig  # noqa: E402
from streamtag.model.inference import InferenceModel  # noqa: E402
from streamtag.wire.publisher import Publisher  # noqa: E402

N_TAGS = 50


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=200, help="timed windows per case")
    args = parser.parse_args()
    print(f"# {cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    model = InferenceModel.load(default_model_path(), device="cpu", backend="onnxruntime",
                                threads=1)
    rng = np.random.default_rng(0)
    tags = tuple(f"tag{i:02d}" for i in range(N_TAGS))
    scores = rng.random((args.windows, N_TAGS)).astype(np.float32) * 0.6
    smoother = Smoother(tags, np.full(N_TAGS, 0.5), SmoothingConfig())
    publisher = Publisher("tcp://127.0.0.1:*", sndhwm=0)
    model_ref = {"name": model.name, "hash": model.hash}
    windows = {size: rng.standard_normal(model.input_shape(size), dtype=np.float32)
               for size in (1, 2, 4, 8)}
    big = np.ones(64 * 2**20 // 8)
    small = np.ones((48, 48), dtype=np.float32)

    def publish(i: int, raw: np.ndarray, smoothed: np.ndarray, active: tuple[str, ...]) -> None:
        publisher.publish_scores(
            "s000", start_s=float(i), end_s=i + 3.0, start_sample=16000 * i,
            end_sample=16000 * i + 48000, tags=tags, raw=raw, smoothed=smoothed,
            active=active, model=model_ref, latency_ms=12.3456)

    def smooth_and_publish(i: int) -> None:
        """One window's smoothing and publishing."""
        p = scores[i % len(scores)]
        smoothed, _ = smoother.update(p, float(i))
        publish(i, p, smoothed, smoother.active_tags())

    def cpu_s(step: Callable[[int], object], i: int) -> float:
        t0 = time.thread_time()
        step(i)
        return time.thread_time() - t0

    def mean_us(step: Callable[[int], object], before: Callable[[], object]) -> float:
        """µs of CPU per call of ``step``, each called right after ``before``."""
        total = 0.0
        for i in range(args.windows):
            before()
            total += cpu_s(step, i)
        return 1e6 * total / args.windows

    def products() -> None:
        for _ in range(400):
            small @ small

    before = {"nothing (warm)": lambda: None,
              "a forward of the default model": lambda: model.forward(windows[1]),
              "a sweep over 64 MB": big.sum,
              "400 products of 48 x 48 matrices": products,
              "a 3 ms sleep": lambda: time.sleep(0.003)}
    print("\nSmoothing + publishing one 50-tag window, µs of CPU, right after:")
    print("| right after | run 1 | run 2 |")
    print("|---|---:|---:|")
    for label, work in before.items():
        runs = [mean_us(smooth_and_publish, work) for _ in range(2)]
        print(f"| {label} | {runs[0]:.0f} | {runs[1]:.0f} |", flush=True)

    print("\nThe windows of one batch after each forward (batch size: µs of CPU per window, "
          "and the first window's)")
    print("| batch | run 1: per window | first | run 2: per window | first |")
    print("|---:|---:|---:|---:|---:|")
    for size, x in windows.items():
        cells = []
        for _ in range(2):
            total = first = 0.0
            batches = max(1, args.windows // size)
            for b in range(batches):
                model.forward(x)
                for j in range(size):
                    spent = cpu_s(smooth_and_publish, b * size + j)
                    total += spent
                    first += spent if j == 0 else 0.0
            cells += [f"{1e6 * total / (batches * size):.0f}", f"{1e6 * first / batches:.0f}"]
        print(f"| {size} | " + " | ".join(cells) + " |", flush=True)

    steps = {"nothing (two clock reads)": lambda i: None,
             "a Python loop of 100 additions": lambda i: sum(range(100)),
             "np.isfinite(scores).all()": lambda i: np.isfinite(scores[i % len(scores)]).all(),
             "np.stack of a batch of 2 windows": lambda i: np.stack([windows[2][0],
                                                                     windows[2][1]]),
             "Smoother.update": lambda i: smoother.update(scores[i % len(scores)], float(i)),
             "Publisher.publish_scores": lambda i: publish(i, scores[i % len(scores)],
                                                           smoother.smoothed, ())}
    print("\nOne step, µs of CPU, warm and as the first thing after a forward (batch 2)")
    print("| step | warm, run 1 | after a forward, run 1 | warm, run 2 | after a forward, run 2 |")
    print("|---|---:|---:|---:|---:|")
    for label, step in steps.items():
        cells = [f"{mean_us(step, before):.1f}" for _ in range(2)
                 for before in (lambda: None, lambda: model.forward(windows[2]))]
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    publisher.close(linger_ms=0)
    print(f"\n# load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
