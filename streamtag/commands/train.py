"""``streamtag train`` and ``streamtag eval``.

``streamtag.cli`` adds them with ``add_commands(subparsers)``; ``python -m
streamtag.commands.train train ...`` runs them on their own.

    streamtag train RECIPE.toml [--set section.key=value ...] [--out RUN_DIR]
    streamtag train --resume RUN_DIR [--set train.epochs=60 ...]
    streamtag pretrain RECIPE.toml [--set section.key=value ...] [--out RUN_DIR]
    streamtag eval MODEL.pt RECIPE.toml [--split test] [--set ...] [--json OUT.json]
    streamtag ensemble A.pt B.pt ... --out E.pt [--name NAME]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import sys
from pathlib import Path

from streamtag.commands import refused

STDOUT = "-"  # --json - : the metrics on standard output

__all__ = ["add_commands", "cmd_ensemble", "cmd_eval", "cmd_pretrain", "cmd_train",
           "main"]


def _default_run_dir(name: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{name}-{stamp}"


def cmd_train(args: argparse.Namespace) -> int:
    from streamtag.errors import ConfigError, ModelError
    from streamtag.train.recipe import load_recipe
    from streamtag.train.run import train
    from streamtag.train.runtime import RECIPE_FILE, distributed_from_env

    try:
        if args.resume:
            if args.out:
                raise ConfigError("give either --resume RUN_DIR or --out RUN_DIR, not both")
            run_dir = Path(args.resume)
            source = Path(args.recipe) if args.recipe else run_dir / RECIPE_FILE
            recipe = load_recipe(source, args.set or ())
            result = train(recipe, run_dir, resume=True)
        else:
            if not args.recipe:
                raise ConfigError("give a recipe (RECIPE.toml) or --resume RUN_DIR")
            recipe = load_recipe(args.recipe, args.set or ())
            if not args.out and distributed_from_env().active:
                raise ConfigError("under torchrun give --out RUN_DIR: every process must name "
                                  "the same run folder")
            run_dir = Path(args.out) if args.out else _default_run_dir(recipe.name)
            if run_dir.exists() and not run_dir.is_dir():
                raise ConfigError(f"--out {run_dir} is a file; give a run folder (new, or one "
                                  "to continue with --resume)")
            result = train(recipe, run_dir)
    except (ConfigError, ModelError) as error:
        return refused("train", error)
    except KeyboardInterrupt:
        print("streamtag train: interrupted; continue with --resume RUN_DIR (the last finished "
              "epoch is checkpointed)", file=sys.stderr)
        return 130
    if result is None:  # a torchrun process other than rank 0: rank 0 reports
        return 0
    roc = result.metrics.get("roc_auc_macro")
    pr = result.metrics.get("pr_auc_macro")
    print(f"streamtag train: {result.model_path}: test ROC-AUC macro "
          f"{'-' if roc is None else f'{roc:.4f}'}, PR-AUC macro "
          f"{'-' if pr is None else f'{pr:.4f}'}, best epoch {result.best_epoch} of "
          f"{result.epochs}, {result.train_seconds:.0f} s of training")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from streamtag.errors import ConfigError, ModelError
    from streamtag.train.encoder_file import PRETRAINED_FILE
    from streamtag.train.pretrain import pretrain
    from streamtag.train.recipe import load_recipe

    run_dir = None
    try:
        recipe = load_recipe(args.recipe, args.set or ())
        run_dir = Path(args.out) if args.out else _default_run_dir(recipe.name)
        result = pretrain(recipe, run_dir)
    except (ConfigError, ModelError) as error:
        return refused("pretrain", error)
    except KeyboardInterrupt:
        kept = run_dir is not None and (run_dir / PRETRAINED_FILE).is_file()
        print("streamtag pretrain: interrupted" + (f"; {run_dir / PRETRAINED_FILE} holds the "
                                                   "best epoch so far" if kept else ""),
              file=sys.stderr)
        return 130
    print(f"streamtag pretrain: {result.path}: validation reconstruction MSE "
          f"{result.before['mse']:.5f} before training, {result.metrics['mse']:.5f} after "
          f"(epoch {result.best_epoch} of {result.epochs}); codebook perplexity "
          f"{result.metrics['perplexity']:.1f}, {result.metrics['dead_codes']} dead codes; "
          f"{result.train_seconds:.0f} s of training. Next: streamtag train RECIPE.toml --set "
          f"model.encoder={result.path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from streamtag.catalog.installed import resolve_model
    from streamtag.errors import ConfigError, ModelError
    from streamtag.train.export import evaluate_model_file
    from streamtag.train.metrics import metrics_table
    from streamtag.train.recipe import load_recipe

    try:
        if args.json and args.json != STDOUT and not Path(args.json).absolute().parent.is_dir():
            raise ConfigError(f"--json {args.json}: its folder does not exist; give a path in "
                              "a folder that exists")
        model = resolve_model(args.model)
        recipe = load_recipe(args.recipe, args.set or ())
        # with --json -, standard output holds the JSON alone: the feature cache's lines go
        # to stderr
        with contextlib.redirect_stdout(sys.stderr if args.json == STDOUT else sys.stdout):
            result = evaluate_model_file(model, recipe, split=args.split, device=args.device)
    except (ConfigError, ModelError) as error:
        return refused("eval", error)
    if args.json == STDOUT:  # the data alone, for a pipe
        print(json.dumps(result, indent=2))
        return 0
    print(metrics_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    from streamtag.catalog.installed import resolve_model
    from streamtag.errors import ModelError
    from streamtag.model import modelfile

    if len(args.models) < 2:
        return refused("ensemble", f"an ensemble averages two or more models; {args.models[0]} "
                                   "alone is already that model: give the others too")
    try:
        members = [resolve_model(m) for m in args.models]
    except ModelError as error:
        return refused("ensemble", error)
    if Path(args.out).resolve() in {Path(m).resolve() for m in members}:
        return refused("ensemble", f"--out {args.out} is one of the members; give another path")
    if not Path(args.out).absolute().parent.is_dir():
        return refused("ensemble", f"--out {args.out}: its folder does not exist; give a path "
                                   "in a folder that exists")
    try:
        manifest = modelfile.save_ensemble(members, args.out, name=args.name)
    except ModelError as error:
        return refused("ensemble", error)
    print(f"streamtag ensemble: wrote {args.out}: the mean of the probabilities of "
          f"{len(args.models)} models ({', '.join(m['name'] for m in manifest.members)}), "
          f"{len(manifest.tags)} tags")
    return 0


def _add_run_options(parser: argparse.ArgumentParser, data_root: str) -> None:
    """``--set`` and ``--out`` of a command that trains from a recipe into a run folder;
    ``data_root``: the help's example data folder."""
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                        help="override a recipe value (TOML syntax; bare strings allowed), e.g. "
                             f"--set data.root={data_root} --set train.epochs=5; repeatable")
    parser.add_argument("--out", help="run folder (default runs/NAME-TIMESTAMP)")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``train`` and ``eval`` to the ``streamtag`` command line's subparsers."""
    p = subparsers.add_parser(
        "train", help="train a zoo model from a recipe; writes a run folder with model.pt",
        description="Train a model from a recipe (models/recipes/*.toml). The run folder gets "
                    "the resolved recipe, train.log, checkpoints, metrics.json, plots and "
                    "model.pt.")
    p.add_argument("recipe", nargs="?", help="recipe TOML (with --resume: default "
                                             "RUN_DIR/recipe.toml)")
    _add_run_options(p, "/data/mtg")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a stopped run from its last checkpoint")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser(
        "pretrain", help="pre-train the VQ-VAE of a vqvae recipe on (unlabeled) audio",
        description="Pre-train the VQ-VAE autoencoder (model.architecture = \"vqvae\") on the "
                    "recipe's training audio, labels ignored (data.kind = \"audio_folder\" "
                    "takes any folder of audio files). The run folder gets the resolved "
                    "recipe, pretrain.log, metrics.json and vqvae.pt; then train vqvae_gru or "
                    "vqvae_cnn with --set model.encoder=RUN_DIR/vqvae.pt.")
    p.add_argument("recipe", help="recipe TOML with model.architecture = \"vqvae\"")
    _add_run_options(p, "/data/audio")
    p.set_defaults(func=cmd_pretrain)

    p = subparsers.add_parser(
        "eval", help="evaluate a model file on a split of a recipe's dataset",
        description="ROC-AUC, PR-AUC, precision, recall and F1 (macro, micro, per tag) of a "
                    "model file, with its own frontend options and thresholds.")
    p.add_argument("model", help="model file (.pt) or installed model name")
    p.add_argument("recipe", help="recipe TOML naming the dataset ([data]) and [eval] options")
    p.add_argument("--split", default="test", choices=("train", "validation", "test"))
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a recipe value, e.g. --set data.root=/data/mtg; repeatable")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--json", metavar="OUT",
                   help="also write the metrics as JSON to OUT; - prints only the JSON, on "
                        "standard output")
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser(
        "ensemble", help="one model file averaging the probabilities of several model files",
        description="Multi-model averaging: one model file whose output is the mean of its "
                    "members' probabilities (the daemon runs it like any model). Members must "
                    "share tags (in order), input kind, frontend options, window and hop; the "
                    "thresholds are the mean of theirs.")
    p.add_argument("models", nargs="+", metavar="MODEL.pt",
                   help="member model files or installed model names")
    p.add_argument("--out", required=True, metavar="E.pt", help="the ensemble model file")
    p.add_argument("--name", help="the ensemble's name (default: 'ensemble of' the members)")
    p.set_defaults(func=cmd_ensemble)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamtag", description="streamtag trainer")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
