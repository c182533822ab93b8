"""Window reuse's steps against the whole window, the forward alone, side by side in one run.

For each model: the model file served as the daemon serves it (``InferenceModel``, ONNX Runtime,
one thread) and its window reuse at the model's hop (``--hop`` to change it): the whole window's
forward (what serves without reuse), the ``next`` step (a window and the carry of the window
before: what a stream's windows run once it has started) and the ``first`` step (a window with
no carry, which also leaves one), on the same random windows at each batch of ``--batches``,
timed in thread CPU time, the three taking turns; the best of ``--reps`` calls of each is
printed in ms per window, with the whole window's time over ``next``'s and the largest
difference between ``next``'s probabilities and the whole window's. Models: the shipped
default model and any installed model by name (``streamtag models install musicnn-msd``, then
``--models musicnn-msd``). Nothing here asserts a time.

    python benchmarks/reuse_steps.py [--models default musicnn-msd vgg-msd] [--reps 20]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402

import machine  # noqa: E402 - benchmarks/machine.py, beside this script
import numpy as np  # noqa: E402

from streamtag.catalog.installed import resolve_model  # noqa: E402
from streamtag.catalog.shipped import default_model_path  # noqa: E402
from streamtag.model.inference import InferenceModel  # noqa: E402
from streamtag.model.window_reuse import check_windows  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["default"])
    parser.add_argument("--hop", type=int, default=None, help="frames (default: the model's)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    print(machine.machine_line())
    print(machine.table_head(["model", "hop", "batch", "whole window ms", "next ms", "first ms",
                              "whole / next", "max difference", "reuse ready in s"], 1))
    for name in args.models:
        path = default_model_path() if name == "default" else resolve_model(name)
        model = InferenceModel.load(path, device="cpu", backend="onnxruntime", threads=1)
        hop = args.hop or model.hop
        started = time.perf_counter()
        reuse, why = model.window_reuse(hop)
        ready_s = time.perf_counter() - started
        if reuse is None:
            print(machine.table_row([name, hop, *[""] * 6, f"no reuse: {why}"]))
            continue
        for batch in args.batches:
            lag = reuse.geometry.lag
            windows = check_windows(model.frontend.n_mels, model.window, hop, lag + batch)
            before, now = windows[:batch], windows[lag:lag + batch]
            _, carries = reuse.first(before)
            runs = {"whole": partial(model.forward, now), "next": partial(reuse.next, now, carries),
                    "first": partial(reuse.first, now)}
            for run in runs.values():
                run()  # first-call costs
            best = machine.best_in_turns(runs, args.reps)
            ms = {key: 1e3 * s / batch for key, s in best.items()}
            difference = np.abs(reuse.next(now, carries)[0] - model.forward(now)).max()
            print(machine.table_row([name, hop, batch, f"{ms['whole']:.2f}", f"{ms['next']:.2f}",
                                     f"{ms['first']:.2f}", f"{ms['whole'] / ms['next']:.2f}",
                                     f"{difference:.1e}", f"{ready_s:.2f}"]), flush=True)
    print(machine.load_at_end())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
