"""Sets the shipped default model's `major` and `minor` thresholds to 0.5 and its test metrics
to match, at development time (the step after training, models/recipes/default.toml).

Every synthetic clip is in exactly one mode, and the model's `major` and `minor` scores sum to
1 in every window, so 0.5 is the one threshold pair that turns on exactly one of them. The
F1-optimal thresholds that training chooses on the validation split lie below 0.5 for both
(about 0.37), which turns both on in every unsure window: a contradiction no listener makes.

    python models/thresholds/default_mode.py models/default/model.pt

The file is rewritten in place (atomically) with the new thresholds, the test metrics of
``streamtag eval FILE models/recipes/default.toml --split test`` under them, and a note in
its options; its module, weights and graphs are kept byte for byte.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from streamtag.model import stored
from streamtag.train.export import evaluate_model_file
from streamtag.train.recipe import load_recipe

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "default.toml"
MODE_THRESHOLD = 0.5
MODE_TAGS = ("major", "minor")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="the default model file, rewritten in place")
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    args = parser.parse_args()

    manifest = stored.read_manifest(args.model)
    thresholds = [MODE_THRESHOLD if tag in MODE_TAGS else float(t)
                  for tag, t in zip(manifest.tags, manifest.thresholds, strict=True)]
    stored.rewrite(args.model, args.model, thresholds=tuple(thresholds))
    result = evaluate_model_file(args.model, load_recipe(args.recipe), split="test",
                                 device="cpu")
    result.pop("model")
    metrics = {"split": result.pop("split"), **result}
    options = {**manifest.options,
               "fixed_thresholds": {tag: MODE_THRESHOLD for tag in MODE_TAGS},
               "fixed_thresholds_why": "one of an exclusive pair whose scores sum to 1"}
    stored.rewrite(args.model, args.model, metrics=metrics, options=options)
    print(f"{args.model}: thresholds {dict(zip(manifest.tags, thresholds, strict=True))}")
    for key in ("roc_auc_macro", "pr_auc_macro", "f1_macro", "f1_micro", "precision_macro",
                "precision_micro", "recall_macro", "recall_micro"):
        print(f"  {key} {metrics[key]:.3f}")
    for row in metrics["per_tag"]:
        if row["tag"] in MODE_TAGS:
            print(f"  {row['tag']}: precision {row['precision']:.3f}, recall "
                  f"{row['recall']:.3f}, f1 {row['f1']:.3f}")


if __name__ == "__main__":
    main()
