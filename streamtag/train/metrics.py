"""Evaluation as the MediaEval 2019 Emotion and Theme task computes it, and per-tag thresholds.

``evaluate`` calls scikit-learn the way the task's ``evaluate.py`` does:

- ROC-AUC and PR-AUC (``roc_auc_score``, ``average_precision_score``) from the scores, macro and
  micro. The macro averages run over the tags that have both positive and negative examples in
  the evaluation set (an AUC needs both); the result lists the tags left out under
  ``auc_skipped_tags``. On a set where every tag has both, they equal the task's numbers (its
  script would stop with an error otherwise). Micro averages pool every tag's examples.
- Precision, recall and F1, macro and micro, from per-tag decisions
  (``precision_recall_fscore_support(..., zero_division=0)``), over all tags.

Decision rule: a tag is on when ``score >= threshold`` — the rule of sklearn's curves that the
thresholds come from, and of the daemon's smoother. (The task's ``calculate_decisions.py`` wrote
``>``, which turns off the example sitting exactly at its F1-optimal threshold; with ``>=`` the
chosen threshold reproduces the F1 it was chosen for.)

``choose_thresholds`` picks one threshold per tag on validation data:

- ``"f1"`` (default, the task's baseline): the threshold of ``precision_recall_curve`` with the
  highest F1; ties go to the lowest threshold, as the task's ``np.argmax`` does.
- ``"roc_elbow"``: the ROC point farthest from the chord of the ROC curve, the diagonal from
  (0, 0) to (1, 1) — its distance is (TPR - FPR) / sqrt(2), so this maximises TPR - FPR
  (Youden's J). The thresholds are ``roc_curve``'s (``drop_intermediate=False``) except its
  first, infinite one; ties go to the highest threshold.
- ``"tpr_tnr"``: the ROC point where the true positive rate meets the true negative rate,
  minimising |TPR - (1 - FPR)| over the same points; ties go to the highest threshold.
- ``"prevalence"``: the tag on as often as its labels are: the k-th highest score, where k is
  the tag's positives (exactly k examples on, more where scores tie at the k-th). A student
  distilled from a teacher's tags then shows each tag as often as the teacher does, where F1
  rewards recall and turns more on (docs/models.md, music-small).

A tag whose validation labels are all one class gets 0.5: there is nothing to place a threshold
between.

The losses: ``bce`` and ``bce_per_tag`` of probabilities (what validation, per-tag early
stopping and the metrics file report), and ``training_loss``, the loss a tagger is trained
with (binary cross-entropy of the logits, or the registry's ``two_head_bce``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["THRESHOLD_METHODS", "bce", "bce_per_tag", "choose_thresholds", "decide", "evaluate",
           "metrics_table", "training_loss"]

THRESHOLD_METHODS = ("f1", "roc_elbow", "tpr_tnr", "prevalence")
DEFAULT_THRESHOLD = 0.5
_EPS = 1e-7


def _check(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    p = np.asarray(y_score, dtype=np.float64)
    if y.ndim == 1:
        y, p = y[:, None], p.reshape(-1, 1)
    if y.ndim != 2 or p.shape != y.shape:
        raise ValueError(f"y_true and y_score must both be (examples, tags); got {y.shape} and "
                         f"{p.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1")
    if not np.isfinite(p).all():
        raise ValueError("y_score holds NaN or infinite values")
    return y.astype(np.int64), p


def _both_classes(y: np.ndarray) -> np.ndarray:
    positives = y.sum(axis=0)
    return (positives > 0) & (positives < y.shape[0])


def decide(y_score: Any, thresholds: Any) -> np.ndarray:
    """Per-tag decisions: ``score >= threshold`` (bool, shaped like ``y_score``)."""
    return np.asarray(y_score, dtype=np.float64) >= np.asarray(thresholds, dtype=np.float64)


def choose_thresholds(y_true: Any, y_score: Any, method: str = "f1") -> np.ndarray:
    """One decision threshold per tag (``(tags,)`` float64), chosen on validation data."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    if method not in THRESHOLD_METHODS:
        raise ValueError(f"unknown threshold method {method!r}; methods: {THRESHOLD_METHODS}")
    y, p = _check(y_true, y_score)
    thresholds = np.full(y.shape[1], DEFAULT_THRESHOLD)
    for j in np.flatnonzero(_both_classes(y)):
        if method == "f1":
            precision, recall, cut = precision_recall_curve(y[:, j], p[:, j])
            precision, recall = precision[:-1], recall[:-1]  # drop the (1, 0) end point
            total = precision + recall
            f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total),
                           where=total > 0)
            thresholds[j] = cut[np.argmax(f1)]
            continue
        if method == "prevalence":
            thresholds[j] = np.sort(p[:, j])[::-1][int(y[:, j].sum()) - 1]
            continue
        fpr, tpr, cut = roc_curve(y[:, j], p[:, j], drop_intermediate=False)
        fpr, tpr, cut = fpr[1:], tpr[1:], cut[1:]  # the first point's threshold is infinite
        if method == "roc_elbow":
            thresholds[j] = cut[np.argmax(tpr - fpr)]
        else:
            thresholds[j] = cut[np.argmin(np.abs(tpr - (1.0 - fpr)))]
    return thresholds


def evaluate(y_true: Any, y_score: Any, thresholds: Any, tag_names: Sequence[str],
             ) -> dict[str, Any]:
    """All the task's metrics, plus a per-tag table. Values that cannot be computed are None."""
    from sklearn.metrics import (
        average_precision_score,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    y, p = _check(y_true, y_score)
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    tag_names = list(tag_names)
    if len(tag_names) != y.shape[1] or len(thresholds) != y.shape[1]:
        raise ValueError(f"{y.shape[1]} tag columns, {len(tag_names)} tag names and "
                         f"{len(thresholds)} thresholds; they must agree")
    decisions = decide(p, thresholds).astype(np.int64)
    valid = _both_classes(y)

    # sklearn reads a one-column matrix as a binary problem, not as one label: pass it flat and
    # ask for the positive class.
    single = y.shape[1] == 1

    def flat(a: np.ndarray) -> np.ndarray:
        return a.ravel() if a.shape[1] == 1 else a

    result: dict[str, Any] = {"n_examples": int(y.shape[0]), "n_tags": int(y.shape[1])}
    if valid.any():
        result["roc_auc_macro"] = float(roc_auc_score(flat(y[:, valid]), flat(p[:, valid]),
                                                      average="macro"))
        result["pr_auc_macro"] = float(average_precision_score(
            flat(y[:, valid]), flat(p[:, valid]), average="macro"))
    else:
        result["roc_auc_macro"] = result["pr_auc_macro"] = None
    pooled = y.ravel()
    if 0 < pooled.sum() < pooled.size:
        result["roc_auc_micro"] = float(roc_auc_score(flat(y), flat(p), average="micro"))
        result["pr_auc_micro"] = float(average_precision_score(flat(y), flat(p),
                                                               average="micro"))
    else:
        result["roc_auc_micro"] = result["pr_auc_micro"] = None
    for average in ("macro", "micro"):
        precision, recall, f1, _ = precision_recall_fscore_support(
            flat(y), flat(decisions), average="binary" if single else average, zero_division=0)
        result[f"precision_{average}"] = float(precision)
        result[f"recall_{average}"] = float(recall)
        result[f"f1_{average}"] = float(f1)
    result["auc_tags"] = int(valid.sum())
    result["auc_skipped_tags"] = [t for t, ok in zip(tag_names, valid, strict=True) if not ok]

    per_tag = []
    for j, tag in enumerate(tag_names):
        precision, recall, f1, _ = precision_recall_fscore_support(
            y[:, j], decisions[:, j], average="binary", zero_division=0)
        per_tag.append({
            "tag": tag,
            "roc_auc": float(roc_auc_score(y[:, j], p[:, j])) if valid[j] else None,
            "pr_auc": float(average_precision_score(y[:, j], p[:, j])) if valid[j] else None,
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "threshold": float(thresholds[j]),
            "support": int(y[:, j].sum()),
        })
    result["per_tag"] = per_tag
    return result


def metrics_table(result: dict[str, Any]) -> str:
    """The summary and per-tag table of an ``evaluate`` result as aligned text."""

    def number(value: float | None) -> str:
        return "   -  " if value is None or math.isnan(value) else f"{value:6.4f}"

    lines = [f"{result['n_examples']} examples, {result['n_tags']} tags"]
    for name in ("roc_auc", "pr_auc", "precision", "recall", "f1"):
        lines.append(f"{name:>10}  macro {number(result[f'{name}_macro'])}  "
                     f"micro {number(result[f'{name}_micro'])}")
    if result["auc_skipped_tags"]:
        lines.append(f"AUC macro over {result['auc_tags']} tags; without a positive or a "
                     f"negative example: {', '.join(result['auc_skipped_tags'])}")
    width = max([len("tag")] + [len(row["tag"]) for row in result["per_tag"]])
    lines.append(f"{'tag':<{width}}  roc_auc  pr_auc  precis  recall      f1  thresh  support")
    for row in result["per_tag"]:
        lines.append(f"{row['tag']:<{width}}  {number(row['roc_auc'])}  {number(row['pr_auc'])}"
                     f"  {number(row['precision'])}  {number(row['recall'])}  "
                     f"{number(row['f1'])}  {number(row['threshold'])}  {row['support']:7d}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Losses


def bce(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities ``p`` against 0/1 targets ``y``."""
    return float(np.mean(bce_per_tag(y, p)))


def bce_per_tag(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Binary cross-entropy of each tag (column), averaged over the tracks (rows)."""
    p = np.clip(p, _EPS, 1 - _EPS)
    return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p), axis=0)


# logit_mse's targets: a teacher's probabilities clipped to [LOGIT_CLIP, 1 - LOGIT_CLIP]
LOGIT_CLIP = 1e-4


def training_loss(output: Any, y: Any, kind: str = "bce", thresholds: Any = None,
                  temperature: float = 1.0) -> Any:
    """The training loss of a tagger's ``output`` against targets ``y`` (torch tensors):
    ``"bce"``, binary cross-entropy of the logits, or ``"two_head_bce"``
    (``nets.two_head_loss`` of both heads' output), as the registry declares (``nets.spec``),
    or ``"logit_mse"``, the mean squared difference of the logits and the targets' logits
    (targets are a teacher's probabilities, clipped by ``LOGIT_CLIP``), or ``"threshold_bce"``,
    binary cross-entropy of ``(logits - logit(thresholds)) / temperature`` against
    ``sigmoid((logit(y) - logit(thresholds)) / temperature)`` (``thresholds``: the teacher's,
    one per tag), least where the logits are the teacher's as the others are, and pulling
    hardest where the teacher's score is near its threshold."""
    if kind == "two_head_bce":
        from streamtag.nets import two_head_loss

        return two_head_loss(output, y)
    import torch
    import torch.nn.functional as F

    if kind == "logit_mse":
        return F.mse_loss(output.float(), torch.logit(y.float(), eps=LOGIT_CLIP))
    if kind == "threshold_bce":
        if thresholds is None:
            raise ValueError("threshold_bce needs the teacher's thresholds")
        centre = torch.logit(torch.as_tensor(thresholds, dtype=torch.float32,
                                             device=output.device), eps=LOGIT_CLIP)
        target = torch.sigmoid((torch.logit(y.float(), eps=LOGIT_CLIP) - centre) / temperature)
        return F.binary_cross_entropy_with_logits((output.float() - centre) / temperature,
                                                  target)

    return F.binary_cross_entropy_with_logits(output.float(), y)
