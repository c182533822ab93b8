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
``--models musicnn-msd``). ``--winograd-rows 0 1`` adds the graph rewrites as they were before
musicnn's long temporal filters were cut in parts (0: its timbral filters F(4, 7), its temporal
ones direct convolutions) beside those served (1), all six timings in one set of turns. Nothing
here asserts a time.

    python benchmarks/reuse_steps.py [--models default musicnn-msd vgg-msd] [--reps 20]
                                     [--winograd-rows 0 1]
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


def loaded(path, hop: int | None, rows: int):
    """(model, its hop, its window reuse or None, why not, seconds the reuse took to be ready),
    the graphs rewritten as served (rows 1) or as before the long kernels' parts (rows 0)."""
    with machine.winograd_rows(bool(rows)):
        model = InferenceModel.load(path, device="cpu", backend="onnxruntime", threads=1)
        hop = hop or model.hop
        started = time.perf_counter()
        reuse, why = model.window_reuse(hop)
        return model, hop, reuse, why, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["default"])
    parser.add_argument("--hop", type=int, default=None, help="frames (default: the model's)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--winograd-rows", type=int, nargs="+", default=[1], choices=[0, 1],
                        help="1: the graph rewrites as served; 0: musicnn's timbral filters "
                             "F(4, 7) and its temporal ones direct, as before")
    args = parser.parse_args()
    print(machine.machine_line())
    print(machine.table_head(["model", "rewrites", "hop", "batch", "whole window ms", "next ms",
                              "first ms", "whole / next", "max difference",
                              "reuse ready in s"], 1))
    for name in args.models:
        path = default_model_path() if name == "default" else resolve_model(name)
        variants = {rows: loaded(path, args.hop, rows) for rows in args.winograd_rows}
        for batch in args.batches:
            runs, steps = {}, {}
            for rows, (model, hop, reuse, _, _) in variants.items():
                if reuse is None:
                    continue
                lag = reuse.geometry.lag
                windows = check_windows(model.frontend.n_mels, model.window, hop, lag + batch)
                before, now = windows[:batch], windows[lag:lag + batch]
                _, carries = reuse.first(before)
                runs |= {(rows, "whole"): partial(model.forward, now),
                         (rows, "next"): partial(reuse.next, now, carries),
                         (rows, "first"): partial(reuse.first, now)}
                steps[rows] = model, reuse, now, carries
            for run in runs.values():
                run()  # first-call costs
            best = machine.best_in_turns(runs, args.reps) if runs else {}
            for rows, (model, hop, reuse, why, ready_s) in variants.items():
                shown = "as served" if rows else "F(4, 7), temporal direct"
                if reuse is None:
                    print(machine.table_row([name, shown, hop, batch, *[""] * 5,
                                             f"no reuse: {why}"]))
                    continue
                ms = {key: 1e3 * best[(rows, key)] / batch for key in ("whole", "next", "first")}
                model, reuse, now, carries = steps[rows]
                difference = np.abs(reuse.next(now, carries)[0] - model.forward(now)).max()
                print(machine.table_row([
                    name, shown, hop, batch, f"{ms['whole']:.2f}", f"{ms['next']:.2f}",
                    f"{ms['first']:.2f}", f"{ms['whole'] / ms['next']:.2f}",
                    f"{difference:.1e}", f"{ready_s:.2f}"]), flush=True)
    print(machine.load_at_end())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
