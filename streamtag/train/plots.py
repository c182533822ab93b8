"""PNG figures of a training run: training curves, per-tag ROC-AUC and PR-AUC, PR curves.

matplotlib is optional: ``available()`` says whether it is installed, and ``write_run_plots``
returns no paths without it. Figures are drawn with matplotlib's object API on an Agg canvas, so
no global backend is set and nothing needs a display.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["available", "per_tag_auc", "pr_curves", "training_curves", "write_run_plots"]

CURVES = "curves.png"
PER_TAG = "per_tag_auc.png"
PR_CURVES = "pr_curves.png"


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _figure(width: float, height: float, rows: int = 1, columns: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    return figure, axes


def _save(figure: Any, path: Path) -> Path:
    figure.savefig(path, dpi=100)
    return path


def training_curves(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Loss (training and validation), validation ROC-AUC and PR-AUC, and the learning rate
    per epoch; the best epoch is marked."""
    figure, axes = _figure(12, 3.6, 1, 3)
    epochs = [h["epoch"] for h in history]

    def series(key: str) -> list[float]:
        return [np.nan if h.get(key) is None else h[key] for h in history]

    loss, auc, lr = axes[0]
    loss.plot(epochs, series("train_loss"), marker="o", label="training")
    loss.plot(epochs, series("val_loss"), marker="o", label="validation")
    loss.set(title="loss (binary cross-entropy)", xlabel="epoch")
    loss.legend()
    auc.plot(epochs, series("val_roc_auc_macro"), marker="o", label="ROC-AUC macro")
    auc.plot(epochs, series("val_pr_auc_macro"), marker="o", label="PR-AUC macro")
    auc.set(title="validation", xlabel="epoch", ylim=(0, 1))
    auc.legend()
    best = [h["epoch"] for h in history if h.get("best")]
    if best:
        for ax in (loss, auc):
            ax.axvline(best[-1], color="grey", linestyle=":", label="best")
    lr.plot(epochs, series("lr"), marker="o")
    lr.set(title="learning rate", xlabel="epoch", yscale="log")
    return _save(figure, Path(path))


def per_tag_auc(per_tag: Sequence[dict[str, Any]], path: str | Path,
                title: str = "test") -> Path:
    """Horizontal bars of each tag's ROC-AUC and PR-AUC, sorted by ROC-AUC (tags without both
    classes in the split are left out)."""
    rows = sorted((r for r in per_tag if r.get("roc_auc") is not None),
                  key=lambda r: r["roc_auc"])
    height = max(3.0, 0.22 * len(rows) + 1.2)
    figure, axes = _figure(11, height, 1, 2)
    names = [r["tag"] for r in rows]
    positions = np.arange(len(rows))
    for ax, key, label in ((axes[0][0], "roc_auc", "ROC-AUC"), (axes[0][1], "pr_auc", "PR-AUC")):
        ax.barh(positions, [r[key] for r in rows], color="tab:blue" if key == "roc_auc"
                else "tab:orange")
        ax.set_yticks(positions, names, fontsize=8)
        ax.set(xlim=(0, 1), title=f"{label} per tag ({title})")
        if key == "roc_auc":
            ax.axvline(0.5, color="grey", linestyle=":")
    return _save(figure, Path(path))


def pr_curves(y_true: np.ndarray, y_score: np.ndarray, tags: Sequence[str], path: str | Path,
              top: int = 10, title: str = "test") -> Path:
    """Precision-recall curves of the ``top`` most frequent tags of the split."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    y_true = np.asarray(y_true)
    support = y_true.sum(axis=0)
    order = [j for j in np.argsort(-support, kind="stable") if 0 < support[j] < len(y_true)]
    figure, axes = _figure(7, 6)
    ax = axes[0][0]
    for j in order[:top]:
        precision, recall, _ = precision_recall_curve(y_true[:, j], y_score[:, j])
        ap = average_precision_score(y_true[:, j], y_score[:, j])
        ax.plot(recall, precision, label=f"{tags[j]} (AP {ap:.2f}, n={int(support[j])})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=f"PR curves, {min(top, len(order))} most frequent tags ({title})")
    if order:
        ax.legend(fontsize=8, loc="lower left")
    return _save(figure, Path(path))


def write_run_plots(run_dir: str | Path, history: Sequence[dict[str, Any]],
                    test_metrics: dict[str, Any], y_test: np.ndarray, p_test: np.ndarray,
                    tags: Sequence[str]) -> list[Path]:
    """All three figures into ``run_dir``; no paths when matplotlib is not installed."""
    if not available():
        return []
    run_dir = Path(run_dir)
    return [
        training_curves(history, run_dir / CURVES),
        per_tag_auc(test_metrics["per_tag"], run_dir / PER_TAG),
        pr_curves(y_test, p_test, tags, run_dir / PR_CURVES),
    ]
