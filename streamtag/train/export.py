"""After training: thresholds, test metrics, plots and the model file; and evaluating a model file.

``export_run(run)`` takes the network to export (``TrainingRun.final_model``: the best epoch's
weights, the SWA average, a snapshot average or per-tag best epochs), chooses one threshold per
tag on the validation split (``eval.threshold_method``), scores the test split, and writes into
the run directory:

- ``metrics.json``: test and validation metrics (``streamtag.train.metrics.evaluate``: ROC-AUC,
  PR-AUC, precision, recall, F1, macro and micro, and the per-tag table), the thresholds, the
  best epoch and the training history;
- ``predictions.npz``: the per-track probabilities and labels of both splits, with track ids;
- ``curves.png``, ``per_tag_auc.png``, ``pr_curves.png`` (``plots``; skipped without
  matplotlib);
- ``model.pt``: the model file (``streamtag.model.modelfile.save``) with the tags, the frontend
  options, input kind, window and hop, the thresholds, the architecture and its options, the
  test metrics and the resolved recipe — everything the daemon needs. A run trained with
  high-level track features (``data.features``) writes ``model_features.pt`` instead
  (TorchScript ``forward(x, features)`` with the feature names and standardisation inside):
  a live stream has no per-track features for the daemon to give it.

``evaluate_model_file(path, recipe, split)`` scores a model file on a split of the recipe's
dataset with the file's own frontend options, window and thresholds (``streamtag eval``);
``model_file_predictions(loaded, recipe, split)`` gives its per-track probabilities.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from streamtag.errors import ConfigError
from streamtag.fsutil import atomic_path, write_json_atomic
from streamtag.train.data import TrackData, prepare_data
from streamtag.train.loop import TrainingRun
from streamtag.train.metrics import bce
from streamtag.train.recipe import Recipe
from streamtag.train.windows import predict

__all__ = ["METRICS_FILE", "MODEL_FILE", "RunResult", "evaluate_model_file", "export_run",
           "model_file_predictions"]

METRICS_FILE = "metrics.json"
MODEL_FILE = "model.pt"
FEATURES_MODEL_FILE = "model_features.pt"
PREDICTIONS_FILE = "predictions.npz"


@dataclasses.dataclass
class RunResult:
    """What a training run made: the run directory, the model file, the test metrics."""

    run_dir: Path
    model_path: Path
    metrics: dict[str, Any]
    epochs: int
    best_epoch: int
    train_seconds: float


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "per_tag"}


def export_run(run: TrainingRun) -> RunResult:
    """Thresholds on validation, test metrics, plots and ``model.pt`` for a trained run."""
    from streamtag.model import modelfile
    from streamtag.train import plots
    from streamtag.train.metrics import choose_thresholds, evaluate, metrics_table

    r = run.recipe
    tags = run.data.tags
    network, made = run.final_model()
    best_epoch = made["best_epoch"]
    p_val = run.predict("validation", network)
    y_val = run.data.labels["validation"]
    thresholds = choose_thresholds(y_val, p_val, r.eval.threshold_method)
    validation = evaluate(y_val, p_val, thresholds, tags)
    validation["loss"] = bce(y_val, p_val)
    p_test = run.predict("test", network)
    y_test = run.data.labels["test"]
    test = evaluate(y_test, p_test, thresholds, tags)
    test["loss"] = bce(y_test, p_test)

    np.savez_compressed(
        run.run_dir / PREDICTIONS_FILE, tags=np.array(tags),
        validation_ids=np.array([t.id for t in run.data.tracks["validation"]]),
        validation_labels=y_val, validation_scores=p_val,
        test_ids=np.array([t.id for t in run.data.tracks["test"]]),
        test_labels=y_test, test_scores=p_test, thresholds=thresholds)
    summary = {
        "name": r.name,
        "architecture": r.model.architecture,
        "epochs_trained": run.epoch,
        "best_epoch": best_epoch,
        "exported": made,
        "stopped_early": run.stopped_early,
        "early_stopping": run.best,
        "threshold_method": r.eval.threshold_method,
        "thresholds": dict(zip(tags, thresholds.tolist(), strict=True)),
        "train_seconds": run.train_seconds,
        "test": test,
        "validation": validation,
        "history": run.history,
    }
    write_json_atomic(run.run_dir / METRICS_FILE, summary)
    figures = plots.write_run_plots(run.run_dir, run.history, test, y_test, p_test, tags)
    if not figures:
        run.log("plots skipped: matplotlib is not installed (pip install matplotlib)")

    options = run.options
    if run.data.features is not None:
        model_path = _save_with_features(run, network, thresholds, test)
        return RunResult(run_dir=run.run_dir, model_path=model_path, metrics=test,
                         epochs=run.epoch, best_epoch=best_epoch, train_seconds=run.train_seconds)
    model_path = run.run_dir / MODEL_FILE
    modelfile.save(network, model_path, {
        "name": r.name,
        "tags": list(tags),
        "input_kind": r.model.input_kind,
        "frontend": options,
        "window": r.model.window,
        "hop": r.model.hop,
        "thresholds": thresholds.tolist(),
        "architecture": {"name": r.model.architecture, **dict(r.model.options)},
        "options": {**made, "epochs_trained": run.epoch,
                    "threshold_method": r.eval.threshold_method, "eval_windows": r.eval.windows,
                    "eval_hop": r.eval.eval_hop or r.model.hop,
                    "window_seconds": _window_seconds(r, options)},
        "metrics": {"split": "test", **test},
        "recipe": r.to_dict(),
    })
    run.log(f"test ({len(y_test)} tracks), thresholds by {r.eval.threshold_method} on "
            f"validation:\n{metrics_table(test)}")
    run.log(f"wrote {model_path} ({model_path.stat().st_size / 1e6:.2f} MB), "
            f"{run.run_dir / METRICS_FILE}" + "".join(f", {p.name}" for p in figures))
    return RunResult(run_dir=run.run_dir, model_path=model_path, metrics=test, epochs=run.epoch,
                     best_epoch=best_epoch, train_seconds=run.train_seconds)


def _save_with_features(run: TrainingRun, network: Any, thresholds: np.ndarray,
                        test: dict[str, Any]) -> Path:
    """A network that takes high-level track features: TorchScript ``forward(x, features)``
    giving logits, with ``features.json`` inside (the feature names and the standardisation
    to apply, tags, frontend options, window, hop, thresholds). Not a daemon model file: a live
    stream has no per-track feature vector."""
    import torch

    from streamtag.train.metrics import metrics_table

    r = run.recipe
    path = run.run_dir / FEATURES_MODEL_FILE
    scripted = torch.jit.script(copy.deepcopy(network).cpu().eval())
    info = {
        "name": r.name,
        "tags": list(run.data.tags),
        "feature_names": list(run.data.feature_names),
        "feature_scaler": run.data.feature_scaler.to_dict(),
        "frontend": run.options.to_dict(),
        "input_kind": r.model.input_kind,
        "window": r.model.window,
        "hop": r.model.hop,
        "thresholds": thresholds.tolist(),
        "outputs": "logits of forward(x, (features - mean) / std)",
    }
    with atomic_path(path) as temporary:
        torch.jit.save(scripted, str(temporary),
                       _extra_files={"features.json": json.dumps(info, indent=2)})
    run.log(f"test ({len(run.data.labels['test'])} tracks), thresholds by "
            f"{r.eval.threshold_method} on validation:\n{metrics_table(test)}")
    run.log(f"wrote {path}: TorchScript forward(x, features) with features.json inside. It "
            f"needs each track's high-level features, which a live stream does not have, so "
            f"no daemon model file ({MODEL_FILE}) is written; train without data.features "
            "for one")
    return path


def _window_seconds(recipe: Recipe, options: Any) -> float:
    if recipe.model.input_kind == "waveform":
        return recipe.model.window / options.sample_rate
    return recipe.model.window * options.hop_length / options.sample_rate


def model_file_predictions(loaded: Any, recipe: Recipe, split: str = "test",
                           log: Any = print) -> tuple[TrackData, np.ndarray]:
    """A loaded model file's (``modelfile.load``) per-track probabilities on ``split`` of the
    recipe's dataset, and that dataset (``prepare_data``'s, with the split's tracks in the
    probabilities' order): the file's frontend options, input kind, tags, window and hop
    (``[eval] eval_hop`` 0), tracks scored as ``[eval] windows`` says."""
    data = prepare_data(recipe, options=loaded.frontend_options, input_kind=loaded.input_kind,
                        tags=list(loaded.tags), splits=(split,), log=log)
    p = predict(loaded.module, data, split, loaded.window, recipe.eval.eval_hop or loaded.hop,
                mode=recipe.eval.windows,
                batch_size=recipe.eval.batch_size or 2 * recipe.train.batch_size,
                device=loaded.device, outputs="probabilities")
    return data, p


def evaluate_model_file(model_path: str | os.PathLike, recipe: Recipe, split: str = "test",
                        device: str = "auto", log: Any = print) -> dict[str, Any]:
    """Metrics of a model file on ``split`` of the recipe's dataset.

    The features are the file's (its frontend options and input kind), tracks are scored as
    ``[eval]`` says (``eval_hop`` 0: the file's hop), decisions use the file's thresholds. The
    file's tags must all be in the dataset; the result is ``metrics.evaluate``'s dict.
    """
    from streamtag.model import modelfile
    from streamtag.train.metrics import evaluate

    if recipe.data.options.get("features"):
        raise ConfigError("streamtag eval scores daemon model files, which take no track "
                          "features; leave data.features out of the recipe (a run trained "
                          "with features reports its test metrics in metrics.json)")
    loaded = modelfile.load(model_path, device=device)
    if loaded.frontend_options != recipe.frontend_options():
        log("note: the recipe's [frontend] differs from the model file's; using the model "
            "file's options")
    data, p = model_file_predictions(loaded, recipe, split, log=log)
    y = data.labels[split]
    result = evaluate(y, p, loaded.thresholds, list(loaded.tags))
    result["loss"] = bce(y, p)
    result["split"] = split
    result["model"] = str(model_path)
    return result
