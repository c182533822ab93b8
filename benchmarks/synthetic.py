"""Synthetic benchmark clip generation: CPU milliseconds per clip and × real time, so that a
dataset of N clips is known to build in seconds. (It was a unit test's 50 ms bound; a time
belongs here, where a loaded or slow machine only changes the figure.)

    python benchmarks/synthetic.py [--clips 32]
"""

from __future__ import annotations

import argparse
import statistics
import time

from streamtag.audio.synthetic import SyntheticConfig, generate_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=32)
    args = parser.parse_args()
    config = SyntheticConfig()
    generate_clip(0, config)  # the first call builds the shared noise buffer
    cpu_s = []
    for seed in range(args.clips):
        start = time.process_time()
        generate_clip(seed, config)
        cpu_s.append(time.process_time() - start)
    median = statistics.median(cpu_s)
    print(f"{args.clips} clips of {config.clip_seconds:g} s at {config.sample_rate} Hz: "
          f"median {1000 * median:.1f} ms CPU per clip "
          f"({config.clip_seconds / median:.0f}× real time), max {1000 * max(cpu_s):.1f} ms")


if __name__ == "__main__":
    main()
