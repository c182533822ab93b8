"""Model zoo cost: parameters, MFLOPs and one-thread CPU time per window of every architecture.

Each model is built at its default input (``nets.spec(name)["default_input"]``) in eval mode and
timed under ``torch.inference_mode()`` on ONE thread, eager and as TorchScript (scripted, saved
and loaded again, as the daemon reads model files), at batch 1 and batch 32: warm-up passes,
then the best of ``--repeats``, the two variants taking turns. A pass's time is the CPU time
(user + system) of this process, which on one thread is what a core of its own would take; the
wall clock, which also holds the time other processes had the core, is reported beside it.
Batch 32 is reported per window (batch time / 32). From that, the real-time streams one core
could serve at one window per stream per second: 1000 / (ms per window).

MFLOPs are ``torch.utils.flop_counter.FlopCounterMode``'s count for one forward at batch 1, in
which a multiply-add is 2 flops; it counts convolutions and matrix products only (not batch
norm, activations, pooling), and RNN layers it sees no products in (the CPU LSTM kernel) are
added from their sizes.

``--max-seconds-per-model`` caps the timing of one model at one batch size (both variants): no
new round of repeats starts after it. Warm-up and one timed pass of each variant always run, so
batch 32 is skipped where those are projected (from batch 1) to take longer than the cap. The
output says where either happened.

    python benchmarks/models.py [--models vggish crnn ...] [--repeats 5]
                                [--max-seconds-per-model 120] [--n-tags N] [--json out.json]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from machine import cpu_name, table_head, table_row  # noqa: E402 - benchmarks/machine.py
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from streamtag import nets  # noqa: E402

# The MagnaTagATune top-50 reproductions; every other model is an MTG-Jamendo mood/theme model.
MAGNATAGATUNE_MODELS = ("samplecnn", "mel_cnn", "lstm")
BATCH = 32
# Warm-up passes before timing: TorchScript's profiling executor records shapes on its first
# pass and builds the optimized graph on the second, so it needs one more than eager.
MIN_WARMUP = {"eager": 1, "torchscript": 2}
MIN_WARMUP_SECONDS = 0.25  # small models warm up longer: caches, allocator, CPU clocks
NOTABLE = 0.10  # eager and TorchScript differ notably when their times differ by more than this


def default_n_tags(name: str) -> int:
    suggested = nets.spec(name).get("n_tags")
    if suggested:
        return int(suggested)
    return 50 if name in MAGNATAGATUNE_MODELS else 56


def input_label(kind: str, shape: tuple[int, ...] | list[int]) -> str:
    if kind == "waveform":
        return f"{shape[0]} samples"
    return "×".join(map(str, shape)) + " mel"


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _rnn_flops(rnn: nn.RNNBase, x: torch.Tensor) -> int:
    """Matrix-product flops of one pass (2 per multiply-add, as FlopCounterMode counts)."""
    gates = {"LSTM": 4, "GRU": 3}.get(rnn.mode, 1)
    if x.dim() == 2:
        batch, steps = 1, x.size(0)
    elif rnn.batch_first:
        batch, steps = x.size(0), x.size(1)
    else:
        batch, steps = x.size(1), x.size(0)
    directions = 2 if rnn.bidirectional else 1
    hidden = rnn.hidden_size
    total = 0
    for layer in range(rnn.num_layers):
        inputs = rnn.input_size if layer == 0 else hidden * directions
        total += 2 * batch * steps * directions * gates * hidden * (inputs + hidden)
    return total


def count_flops(model: nn.Module, x: torch.Tensor) -> tuple[int, list[str]]:
    """FlopCounterMode's total for one forward, plus RNN layers it counted nothing for."""
    seen: dict[str, torch.Tensor] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.RNNBase):
            def remember(module: nn.Module, args: tuple, name: str = name) -> None:
                seen[name] = args[0]

            hooks.append(module.register_forward_pre_hook(remember))
    counter = FlopCounterMode(display=False)
    try:
        with torch.inference_mode(), counter:
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    total = counter.get_total_flops()
    per_module = counter.get_flop_counts()
    notes = []
    for name, rnn_input in seen.items():
        counted = sum(per_module.get(f"{type(model).__name__}.{name}", {}).values())
        if counted == 0:
            rnn = model.get_submodule(name)
            added = _rnn_flops(rnn, rnn_input)
            total += added
            notes.append(f"{name} ({rnn.mode}): {added / 1e6:.1f} MFLOPs added from its sizes")
    return total, notes


def torchscript(model: nn.Module) -> torch.jit.ScriptModule:
    """The model as the daemon gets it: scripted, saved, loaded again."""
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(model), buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    loaded.eval()
    return loaded


def best_times(runs: dict[str, Callable[[], Any]], repeats: int,
               max_seconds: float) -> dict[str, dict[str, Any]]:
    """Best of ``repeats`` timed passes of each variant after warm-up; fewer when
    ``max_seconds`` runs out. The variants take turns pass by pass, so that both see the same
    background load on a shared machine. The best pass is the one with the least CPU time (user
    + system) of this process: on one thread that is the time a core of its own would take,
    while wall time also holds the time other processes had the core."""
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # as timeit does: a collection inside a pass is noise
    warmed = dict.fromkeys(runs, 0)
    passes: dict[str, list[tuple[float, float, float]]] = {variant: [] for variant in runs}
    try:
        start = time.perf_counter()
        while (any(warmed[v] < MIN_WARMUP[v] for v in runs)
               or (time.perf_counter() - start < MIN_WARMUP_SECONDS and max(warmed.values()) < 50)):
            for variant, run in runs.items():
                run()
                warmed[variant] += 1
        order = list(runs)
        for _ in range(repeats):
            for variant in order:
                run = runs[variant]
                system0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
                cpu0, wall0 = time.process_time(), time.perf_counter()
                run()
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                system = resource.getrusage(resource.RUSAGE_SELF).ru_stime - system0
                passes[variant].append((cpu, wall, system))
            order.reverse()  # neither variant always runs right after the other
            if time.perf_counter() - start > max_seconds:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    results = {}
    for variant, timed in passes.items():
        cpu = sum(p[0] for p in timed)
        results[variant] = {
            "cpu_s": min(p[0] for p in timed), "wall_s": min(p[1] for p in timed),
            "system_share": sum(p[2] for p in timed) / cpu if cpu > 0 else 0.0,
            "timed_passes": len(timed), "warmup_passes": warmed[variant],
            "capped": len(timed) < repeats,
        }
    return results


def bench_model(name: str, n_tags: int, repeats: int, max_seconds: float) -> dict[str, Any]:
    spec = nets.spec(name)
    torch.manual_seed(0)
    model = nets.build(name, n_tags).eval()
    shape = tuple(spec["default_input"])
    flops, flop_notes = count_flops(model, torch.randn(1, *shape))
    t0 = time.perf_counter()
    scripted = torchscript(model)
    result: dict[str, Any] = {
        "name": name, "description": spec["description"], "input_kind": spec["input_kind"],
        "input": list(shape), "n_tags": n_tags, "params": trainable_parameters(model),
        "flops": flops, "mflops": flops / 1e6, "flop_notes": flop_notes,
        "script_seconds": time.perf_counter() - t0,
        "timings": {"eager": {}, "torchscript": {}}, "notes": [],
    }
    modules = {"eager": model, "torchscript": scripted}
    passes = sum(MIN_WARMUP.values()) + len(modules)  # warm-up and one timed pass of each
    for batch in (1, BATCH):
        if batch > 1:
            one_pass = batch * min(t["1"]["wall_s"] for t in result["timings"].values())
            if passes * one_pass > max_seconds:
                for timings in result["timings"].values():
                    timings[str(batch)] = None
                result["notes"].append(
                    f"batch {batch} skipped: warm-up and one timed pass of each variant "
                    f"≈ {passes * one_pass:.0f} s > --max-seconds-per-model {max_seconds:g}")
                continue
        x = torch.randn(batch, *shape)
        runs = {variant: lambda m=m, x=x: m(x) for variant, m in modules.items()}
        t0 = time.perf_counter()
        with torch.inference_mode():
            measured = best_times(runs, repeats, max_seconds)
        seconds = time.perf_counter() - t0
        for variant, timing in measured.items():
            timing["ms_per_window"] = 1e3 * timing["cpu_s"] / batch
            timing["wall_ms_per_window"] = 1e3 * timing["wall_s"] / batch
            timing["streams_per_core"] = 1e3 / timing["ms_per_window"]
            timing["seconds"] = seconds
            result["timings"][variant][str(batch)] = timing
        if seconds > 1.2 * max_seconds:
            result["notes"].append(
                f"batch {batch} took {seconds:.0f} s, over --max-seconds-per-model "
                f"{max_seconds:g}: warm-up and one timed pass of each variant always run, and "
                "they took longer than batch 1 predicted")
        if measured["eager"]["capped"]:
            result["notes"].append(
                f"batch {batch}: best of {measured['eager']['timed_passes']} "
                f"(capped by --max-seconds-per-model {max_seconds:g})")
        del x, runs
    return result


def _ms(timing: dict[str, Any] | None) -> str:
    if timing is None:
        return "—"
    ms = timing["ms_per_window"]
    return f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def _streams(timing: dict[str, Any] | None) -> str:
    if timing is None:
        return "—"
    s = timing["streams_per_core"]
    return f"{s:.0f}" if s >= 10 else f"{s:.1f}" if s >= 1 else f"{s:.2f}"


def _table(head: list[str], text_columns: int, rows: list[list[str]]) -> str:
    return "\n".join([table_head(head, text_columns), *map(table_row, rows)])


def markdown_table(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        t = r["timings"]["torchscript"]
        one, many = t["1"], t[str(BATCH)]
        rows.append([r["name"], input_label(r["input_kind"], r["input"]), f"{r['params']:,}",
                     f"{r['mflops']:,.0f}", _ms(one), _ms(many), _streams(one), _streams(many)])
    return _table(["model", "input", "params", "MFLOPs", "ms/window b1", "ms/window b32",
                   "streams/core b1", "streams/core b32"], 2, rows)


def _ratio(eager: dict[str, Any] | None, script: dict[str, Any] | None) -> str:
    if eager is None or script is None:
        return "—"
    ratio = script["ms_per_window"] / eager["ms_per_window"]
    return f"**{ratio:.2f}**" if abs(ratio - 1) > NOTABLE else f"{ratio:.2f}"


def eager_table(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        e, s = r["timings"]["eager"], r["timings"]["torchscript"]
        rows.append([r["name"], _ms(e["1"]), _ms(s["1"]), _ratio(e["1"], s["1"]),
                     _ms(e[str(BATCH)]), _ms(s[str(BATCH)]), _ratio(e[str(BATCH)], s[str(BATCH)])])
    return _table(["model", "eager b1", "TorchScript b1", "ratio b1", "eager b32",
                   "TorchScript b32", "ratio b32"], 1, rows)


def wall_table(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        cells = [r["name"]]
        for timing in (r["timings"]["torchscript"]["1"], r["timings"]["torchscript"][str(BATCH)]):
            if timing is None:
                cells += ["—"] * 3
                continue
            wall = timing["wall_ms_per_window"]
            cells += [f"{wall:.1f}" if wall >= 10 else f"{wall:.2f}", _ms(timing),
                      f"{timing['system_share']:.0%}"]
        rows.append(cells)
    return _table(["model", "wall b1", "CPU b1", "system b1", "wall b32", "CPU b32",
                   "system b32"], 1, rows)


def machine() -> dict[str, Any]:
    cpu = cpu_name()
    return {"cpu": cpu, "machine": platform.machine(), "cores": os.cpu_count(),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=nets.names(), default=nets.names(),
                        metavar="NAME", help="a subset of the zoo (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes; the best counts")
    parser.add_argument("--max-seconds-per-model", type=float, default=120.0,
                        help="cap on timing one model at one batch size, eager and TorchScript "
                             "together; batch 32 is skipped when it cannot fit (default 120)")
    parser.add_argument("--n-tags", type=int,
                        help="outputs of every model (default: 50 for the MagnaTagATune models "
                             f"{', '.join(MAGNATAGATUNE_MODELS)}, 56 for the rest)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    host = machine()
    print(f"# {host['cpu']}, {host['cores']} cores, torch {host['torch']}, "
          f"{host['threads']} thread, {host['date']}")
    print(f"# best of {args.repeats}, cap {args.max_seconds_per_model:g} s per timing; "
          f"figures are TorchScript unless said otherwise", flush=True)
    started = time.perf_counter()
    results = []
    for name in args.models:
        n_tags = args.n_tags or default_n_tags(name)
        t0 = time.perf_counter()
        r = bench_model(name, n_tags, args.repeats, args.max_seconds_per_model)
        e, s = r["timings"]["eager"], r["timings"]["torchscript"]
        print(f"{name:20s} {r['mflops']:10,.0f} MFLOPs  ms/window b1 eager {_ms(e['1'])} "
              f"script {_ms(s['1'])}  b{BATCH} eager {_ms(e[str(BATCH)])} "
              f"script {_ms(s[str(BATCH)])}  ({time.perf_counter() - t0:.0f} s)", flush=True)
        results.append(r)
    total = time.perf_counter() - started

    print("\n## TorchScript, one thread: CPU ms per window and real-time streams per core "
          "(one window per stream per second)\n")
    print(markdown_table(results))
    print("\n## Eager against TorchScript, CPU ms per window (ratio = TorchScript / eager; "
          f"bold where they differ by more than {NOTABLE:.0%})\n")
    print(eager_table(results))
    print("\n## TorchScript wall clock against CPU time, ms per window (system: the share of "
          "CPU time spent in the kernel, mostly page faults on fresh activation memory)\n")
    print(wall_table(results))
    notes = [f"{r['name']}: {note}" for r in results for note in r["flop_notes"] + r["notes"]]
    if notes:
        print("\nNotes:")
        for note in notes:
            print(f"- {note}")
    tags = ", ".join(f"{r['name']} {r['n_tags']}" for r in results)
    print(f"\nn_tags: {tags}")
    print(f"total {total:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": host, "repeats": args.repeats,
                       "max_seconds_per_model": args.max_seconds_per_model,
                       "total_seconds": total, "models": results}, f, indent=2)


if __name__ == "__main__":
    main()
