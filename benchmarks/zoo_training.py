"""Zoo training: every synthetic-benchmark recipe trained to the end, with its test scores.

Trains each ``models/recipes/synthetic_*.toml`` (or the recipes named on the command line) with
``streamtag.train.run.train``, as ``streamtag train`` would, and prints a markdown table:
architecture, trainable parameters, epochs trained, training minutes (the loop's
``train_seconds``: epochs and validation, not feature caching or export), the test split's
macro ROC-AUC and PR-AUC, and torch's thread count. The synthetic benchmark is generated once
under the cache directory and shared by the recipes (``train.cache_dir``; see the recipes).

A pre-training recipe (``model.architecture = "vqvae"``, the autoencoder of the TaiInn runs) is
pre-trained with ``streamtag.train.pretrain`` instead: it has no tags, so its row has no AUCs and
a note under the table gives its validation reconstruction MSE and codebook perplexity.

A recipe that fails (a bad override, an architecture that rejects its window, an error while
training) is a row saying so, with its error, and the others still run; the exit status is then
1.

    python benchmarks/zoo_training.py [--recipes synthetic_mel_cnn path/to/other.toml ...]
                                      [--threads 2] [--out DIR] [--set train.epochs=1 ...]
                                      [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from machine import cpu_name  # benchmarks/machine.py, beside this script

RECIPES = Path(__file__).resolve().parent.parent / "models" / "recipes"


def recipe_paths(names: list[str] | None) -> list[Path]:
    """The named recipes (a path, or a stem under models/recipes), or every synthetic one."""
    if not names:
        return sorted(RECIPES.glob("synthetic_*.toml"))
    paths = []
    for name in names:
        path = Path(name)
        if not path.is_file():
            path = RECIPES / (name if name.endswith(".toml") else f"{name}.toml")
        if not path.is_file():
            raise SystemExit(f"no recipe {name!r}: not a file, nor one of "
                             f"{', '.join(p.stem for p in sorted(RECIPES.glob('*.toml')))}")
        paths.append(path)
    return paths


def trainable_parameters(architecture: str, n_tags: int, options: dict[str, Any]) -> int:
    """Of one network (a snapshot-averaged model file holds several copies)."""
    from streamtag import nets

    model = nets.build(architecture, n_tags, **options)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train_one(path: Path, overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """Trains one recipe; a failure comes back as ``{"error": ...}`` beside what was known."""
    import torch

    from streamtag import nets
    from streamtag.model.manifest import read_manifest
    from streamtag.train.recipe import load_recipe
    from streamtag.train.run import train

    row: dict[str, Any] = {"recipe": path.stem, "path": str(path), "run_dir": str(run_dir),
                           "architecture": None, "threads": torch.get_num_threads()}
    started = time.perf_counter()
    try:
        recipe = load_recipe(path, overrides)
        row["architecture"] = recipe.model.architecture
        row["epochs_planned"] = recipe.train.epochs
        if nets.spec(recipe.model.architecture)["task"] == "autoencode":
            from streamtag.train.pretrain import pretrain

            pretrained = pretrain(recipe, run_dir, echo=False)
            row.update(
                pretraining=True,
                parameters=trainable_parameters(recipe.model.architecture, 1,
                                                dict(recipe.model.options)),
                epochs=pretrained.epochs, best_epoch=pretrained.best_epoch,
                train_seconds=pretrained.train_seconds, roc_auc_macro=None, pr_auc_macro=None,
                validation=pretrained.metrics, model=str(pretrained.path))
            row["wall_seconds"] = time.perf_counter() - started
            return row
        result = train(recipe, run_dir, echo=False)
        if result is None:  # only under torchrun, on a process other than rank 0
            raise RuntimeError("train() returned no result")
        tags = read_manifest(result.model_path).tags
        row.update(
            parameters=trainable_parameters(recipe.model.architecture, len(tags),
                                            dict(recipe.model.options)),
            n_tags=len(tags), epochs=result.epochs, best_epoch=result.best_epoch,
            train_seconds=result.train_seconds,
            roc_auc_macro=result.metrics.get("roc_auc_macro"),
            pr_auc_macro=result.metrics.get("pr_auc_macro"),
            n_test=result.metrics.get("n_examples"), model=str(result.model_path))
    except Exception as error:  # one recipe's failure never stops the others
        row["error"] = f"{type(error).__name__}: {error}"
        row["traceback"] = traceback.format_exc()
    row["wall_seconds"] = time.perf_counter() - started
    return row


def _cell(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| recipe | architecture | parameters | epochs | training min | test ROC-AUC "
             "macro | test PR-AUC macro | threads |",
             "|---|---|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        if "error" in r:
            error = " ".join(r["error"].split()).replace("|", "\\|")
            error = error if len(error) <= 200 else error[:197] + "..."
            lines.append(f"| {r['recipe']} | {r['architecture'] or '—'} | failed: {error} "
                         f"| | | | | {r['threads']} |")
            continue
        lines.append(f"| {r['recipe']} | {r['architecture']} | {r['parameters']:,} | "
                     f"{r['epochs']} | {r['train_seconds'] / 60:.1f} | "
                     f"{_cell(r['roc_auc_macro'], '.3f')} | {_cell(r['pr_auc_macro'], '.3f')} "
                     f"| {r['threads']} |")
    return "\n".join(lines)


def machine(threads: int) -> dict[str, Any]:
    import torch

    return {"cpu": cpu_name(), "machine": platform.machine(), "cores": os.cpu_count(),
            "torch": torch.__version__, "threads": threads,
            "python": platform.python_version(),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", metavar="RECIPE",
                        help="recipe files or names under models/recipes (default: every "
                             "synthetic_*.toml)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads for training (default 2)")
    parser.add_argument("--out", type=Path,
                        help="keep the runs in DIR/<recipe> (default: a temporary folder, "
                             "removed at the end)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE",
                        help="a recipe override applied to every recipe (repeatable), e.g. "
                             "--set train.epochs=1")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    paths = recipe_paths(args.recipes)

    # Before torch starts its thread pools: OpenMP reads these once.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    host = machine(torch.get_num_threads())
    print(f"# {host['cpu']}, {host['cores']} cores, torch {host['torch']}, "
          f"{host['threads']} thread{'s' if host['threads'] > 1 else ''}, {host['date']}")
    if args.overrides:
        print(f"# overrides: {' '.join(args.overrides)}")
    print(f"# {len(paths)} recipe{'s' if len(paths) > 1 else ''}: "
          f"{', '.join(p.stem for p in paths)}", flush=True)

    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="streamtag-zoo-training-") as temporary:
        out = args.out if args.out is not None else Path(temporary)
        for path in paths:
            print(f"{path.stem}: training ...", end=" ", flush=True)
            row = train_one(path, args.overrides, out / path.stem)
            if "error" in row:
                print(f"failed after {row['wall_seconds']:.0f} s: {row['error']}", flush=True)
            else:
                score = (f"validation MSE {row['validation']['mse']:.5f}"
                         if row.get("pretraining")
                         else f"test ROC-AUC macro {_cell(row['roc_auc_macro'], '.3f')}")
                epochs = f"{row['epochs']} epoch{'s' if row['epochs'] != 1 else ''}"
                print(f"{epochs}, {row['train_seconds'] / 60:.1f} min training, "
                      f"{row['wall_seconds'] / 60:.1f} min in all, {score}", flush=True)
            if args.out is None:
                row["run_dir"] = row["model"] = None  # removed with the temporary folder
            rows.append(row)
    total = time.perf_counter() - started

    print("\n## Synthetic benchmark: test scores of each recipe's exported model\n")
    print(markdown_table(rows))
    notes = [f"- {r['recipe']}: pre-training (no tags): validation reconstruction MSE "
             f"{r['validation']['mse']:.5f}, codebook perplexity "
             f"{r['validation']['perplexity']:.1f}, {r['validation']['dead_codes']} dead codes"
             for r in rows if r.get("pretraining")]
    if notes:
        print("\n" + "\n".join(notes))
    print(f"\ntotal {total / 60:.1f} min")
    if args.out is not None:
        print(f"runs in {args.out}")
    if args.json:
        args.json.write_text(json.dumps({"machine": host, "overrides": args.overrides,
                                         "total_seconds": total, "recipes": rows}, indent=2)
                             + "\n", encoding="utf-8")
    if any("error" in r for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
