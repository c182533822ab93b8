"""ONNX Runtime's forward on a model file's graph as exported against the graph rewritten by
``streamtag.model.graph_passes`` (what the daemon serves), side by side in one run.

For each model: both graphs in ONNX Runtime sessions set up as the daemon sets them up
(``sessions.onnx_session``, one thread), the same random windows at batch 1, 2 and 8, timed
in thread CPU time, the two sessions taking turns; the best of ``--reps`` calls of each is
printed in ms per window with the ratio, and the largest difference between their outputs.
Models: the shipped default model, short_chunk_resnet (random weights: speed does not depend
on them; batch norms given trained-looking statistics) and any installed model by name
(``streamtag models install vgg-mtt``, then ``--models vgg-mtt``). Nothing here asserts a time.

    python benchmarks/graph_passes.py [--models default short_chunk_resnet musicnn-mtt vgg-mtt]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import machine  # noqa: E402 - benchmarks/machine.py, beside this script
import numpy as np  # noqa: E402
import torch  # noqa: E402

from streamtag import nets  # noqa: E402
from streamtag.catalog.installed import installed, path_of  # noqa: E402
from streamtag.catalog.shipped import default_model_path  # noqa: E402
from streamtag.frontend import LogMelOptions  # noqa: E402
from streamtag.model import graph_passes as onnx_passes  # noqa: E402
from streamtag.model import modelfile  # noqa: E402
from streamtag.model.sessions import onnx_session  # noqa: E402


def model_path(name: str, folder: Path) -> Path:
    if name == "default":
        return default_model_path()
    if name in installed():
        return path_of(name)
    torch.manual_seed(0)
    module = nets.build(name, 50)
    for m in module.modules():  # trained-looking batch norms, some factors negative
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.normal_()
    path = folder / f"{name}.pt"
    frontend = LogMelOptions.preset("musicnn").replace(n_mels=nets.spec(name)["default_input"][0])
    modelfile.save(module.eval(), path, {
        "name": name, "tags": [f"tag{i:02d}" for i in range(50)], "input_kind": "logmel",
        "frontend": frontend, "window": nets.spec(name)["default_input"][1],
        "hop": round(frontend.sample_rate / frontend.hop_length)})
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["default", "short_chunk_resnet"])
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    print(machine.machine_line())
    print(machine.table_head(["model", "rewrites", "batch", "as exported ms/window",
                              "rewritten ms/window", "ratio", "max difference"], 2))
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            loaded = modelfile.load(model_path(name, Path(folder)), device="cpu")
            graph = modelfile.onnx_graph(loaded)
            started = time.perf_counter()
            rewritten, notes = onnx_passes.optimize(graph)
            rewrite_s = time.perf_counter() - started
            sessions = [onnx_session(g, threads=1) for g in (graph, rewritten)]
            shape = modelfile.example_input(loaded.manifest).shape[1:]
            for batch in (1, 2, 8):
                x = np.random.default_rng(0).standard_normal((batch, *shape), dtype=np.float32)
                outputs = [s.run(None, {"input": x})[0] for s in sessions]  # first-call costs
                best = machine.best_in_turns({i: partial(s.run, None, {"input": x})
                                              for i, s in enumerate(sessions)}, args.reps)
                rewrites = f"{'; '.join(notes) or 'none'} (rewrite {rewrite_s:.2f} s)"
                print(machine.table_row([name, rewrites, batch, f"{1e3 * best[0] / batch:.2f}",
                                         f"{1e3 * best[1] / batch:.2f}", f"{best[0] / best[1]:.2f}",
                                         f"{np.abs(outputs[0] - outputs[1]).max():.1e}"]),
                      flush=True)
    print(machine.load_at_end())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
