"""Metrics equal scikit-learn called as the MediaEval 2019 script calls it; thresholds by hand."""

from __future__ import annotations

import numpy as np
import pytest

sklearn_metrics = pytest.importorskip("sklearn.metrics", reason="metrics are computed by sklearn")

from streamtag.train.metrics import (  # noqa: E402
    choose_thresholds,
    decide,
    evaluate,
    metrics_table,
)


def random_problem(n: int = 200, tags: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, tags)) < np.linspace(0.1, 0.5, tags)).astype(np.int64)
    # Scores that carry some information, so that the metrics are not all 0.5.
    scores = np.clip(0.35 * y + rng.random((n, tags)) * 0.8, 0.0, 1.0)
    return y, scores


def test_metrics_equal_sklearn_called_directly():
    y, p = random_problem()
    thresholds = np.linspace(0.3, 0.6, y.shape[1])
    result = evaluate(y, p, thresholds, [f"t{i}" for i in range(y.shape[1])])
    decisions = p >= thresholds
    m = sklearn_metrics
    assert result["roc_auc_macro"] == m.roc_auc_score(y, p, average="macro")
    assert result["roc_auc_micro"] == m.roc_auc_score(y, p, average="micro")
    assert result["pr_auc_macro"] == m.average_precision_score(y, p, average="macro")
    assert result["pr_auc_micro"] == m.average_precision_score(y, p, average="micro")
    for average in ("macro", "micro"):
        precision, recall, f1, _ = m.precision_recall_fscore_support(
            y, decisions, average=average, zero_division=0)
        assert result[f"precision_{average}"] == precision
        assert result[f"recall_{average}"] == recall
        assert result[f"f1_{average}"] == f1
    precision, recall, f1, support = m.precision_recall_fscore_support(
        y, decisions, average=None, zero_division=0)
    for j, row in enumerate(result["per_tag"]):
        assert row["tag"] == f"t{j}"
        assert row["roc_auc"] == pytest.approx(m.roc_auc_score(y[:, j], p[:, j]), abs=1e-15)
        assert row["pr_auc"] == pytest.approx(m.average_precision_score(y[:, j], p[:, j]),
                                              abs=1e-15)
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (precision[j], recall[j], f1[j], support[j]))
        assert row["threshold"] == thresholds[j]
    assert result["auc_skipped_tags"] == [] and result["auc_tags"] == y.shape[1]
    assert result["n_examples"] == 200 and result["n_tags"] == 6


def test_tags_without_positives_or_negatives_are_left_out_of_the_auc_macro_and_named():
    y, p = random_problem(tags=5)
    y[:, 1] = 0  # no positive example
    y[:, 3] = 1  # no negative example
    names = ["a", "b", "c", "d", "e"]
    result = evaluate(y, p, np.full(5, 0.5), names)
    kept = [0, 2, 4]
    assert result["auc_skipped_tags"] == ["b", "d"]
    assert result["auc_tags"] == 3
    assert result["roc_auc_macro"] == sklearn_metrics.roc_auc_score(y[:, kept], p[:, kept])
    assert result["pr_auc_macro"] == sklearn_metrics.average_precision_score(y[:, kept],
                                                                             p[:, kept])
    # Micro averages pool all tags' examples, the skipped ones included.
    assert result["roc_auc_micro"] == sklearn_metrics.roc_auc_score(y, p, average="micro")
    per_tag = {row["tag"]: row for row in result["per_tag"]}
    assert per_tag["b"]["roc_auc"] is None and per_tag["b"]["pr_auc"] is None
    assert per_tag["d"]["roc_auc"] is None and per_tag["b"]["support"] == 0
    assert per_tag["a"]["roc_auc"] is not None
    # F1 macro runs over every tag, as sklearn's does.
    f1 = sklearn_metrics.f1_score(y, p >= 0.5, average="macro", zero_division=0)
    assert result["f1_macro"] == f1
    text = metrics_table(result)
    assert "b, d" in text and "AUC macro over 3 tags" in text


def test_nothing_computable_gives_none_not_an_error():
    y = np.zeros((4, 2), dtype=int)
    result = evaluate(y, np.full((4, 2), 0.2), [0.5, 0.5], ["a", "b"])
    assert result["roc_auc_macro"] is None and result["roc_auc_micro"] is None
    assert result["pr_auc_micro"] is None
    assert result["f1_macro"] == 0.0
    assert result["auc_skipped_tags"] == ["a", "b"]


def test_a_single_tag_is_one_label_not_a_two_class_problem():
    y, p = random_problem(tags=1)
    result = evaluate(y, p, [0.5], ["only"])
    precision, recall, f1, _ = sklearn_metrics.precision_recall_fscore_support(
        y[:, 0], p[:, 0] >= 0.5, average="binary", zero_division=0)
    assert result["f1_macro"] == result["f1_micro"] == f1
    assert result["precision_macro"] == precision and result["recall_micro"] == recall
    assert result["roc_auc_macro"] == sklearn_metrics.roc_auc_score(y[:, 0], p[:, 0])


def test_decisions_are_score_at_or_above_threshold():
    assert decide([[0.3, 0.5, 0.7]], [0.5, 0.5, 0.5]).tolist() == [[False, True, True]]
    # The example sitting exactly at the threshold counts as positive in the metrics too.
    result = evaluate([[1], [0]], [[0.5], [0.2]], [0.5], ["t"])
    assert result["recall_macro"] == 1.0 and result["precision_macro"] == 1.0


# Hand-checked case 1: scores [0.1, 0.4, 0.35, 0.8], labels [0, 0, 1, 1] (2 positives, 2
# negatives). With "score >= t" at each distinct score:
#   t = 0.80: TP 1, FP 0 -> P 1.00, R 0.5, F1 0.667; TPR 0.5, FPR 0.0 -> TPR-FPR 0.5, |TPR-TNR| 0.5
#   t = 0.40: TP 1, FP 1 -> P 0.50, R 0.5, F1 0.500; TPR 0.5, FPR 0.5 -> TPR-FPR 0.0, |TPR-TNR| 0.0
#   t = 0.35: TP 2, FP 1 -> P 0.67, R 1.0, F1 0.800; TPR 1.0, FPR 0.5 -> TPR-FPR 0.5, |TPR-TNR| 0.5
#   t = 0.10: TP 2, FP 2 -> P 0.50, R 1.0, F1 0.667; TPR 1.0, FPR 1.0 -> TPR-FPR 0.0, |TPR-TNR| 1.0
# f1 -> 0.35 (F1 0.8). roc_elbow -> 0.8 and 0.35 tie (both 0.5 / sqrt 2 from the diagonal); the
# highest threshold wins -> 0.8. tpr_tnr -> 0.4 (TPR = TNR = 0.5).
# prevalence -> 0.4, the 2nd highest score (2 positives): 2 examples on, as many as the labels.
CASE_1 = ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], {"f1": 0.35, "roc_elbow": 0.8, "tpr_tnr": 0.4,
                                                "prevalence": 0.4})

# Hand-checked case 2: scores [0.2, 0.3, 0.6, 0.7, 0.9], labels [0, 1, 0, 1, 1] (3 pos, 2 neg):
#   t = 0.9: TP 1, FP 0 -> F1 0.500; TPR 0.33, FPR 0.0 -> TPR-FPR 0.33, |TPR-TNR| 0.67
#   t = 0.7: TP 2, FP 0 -> F1 0.800; TPR 0.67, FPR 0.0 -> TPR-FPR 0.67, |TPR-TNR| 0.33
#   t = 0.6: TP 2, FP 1 -> F1 0.667; TPR 0.67, FPR 0.5 -> TPR-FPR 0.17, |TPR-TNR| 0.17
#   t = 0.3: TP 3, FP 1 -> F1 0.857; TPR 1.00, FPR 0.5 -> TPR-FPR 0.50, |TPR-TNR| 0.50
#   t = 0.2: TP 3, FP 2 -> F1 0.750; TPR 1.00, FPR 1.0 -> TPR-FPR 0.00, |TPR-TNR| 1.00
# f1 -> 0.3; roc_elbow -> 0.7; tpr_tnr -> 0.6: three methods, three thresholds. prevalence ->
# 0.6, the 3rd highest (3 positives; one of the three on is the negative at 0.6).
CASE_2 = ([0, 1, 0, 1, 1], [0.2, 0.3, 0.6, 0.7, 0.9], {"f1": 0.3, "roc_elbow": 0.7,
                                                        "tpr_tnr": 0.6, "prevalence": 0.6})

# Hand-checked case 3, an F1 tie: scores [0.9, 0.6, 0.4, 0.3], labels [1, 0, 0, 1]:
#   t = 0.9: P 1.00, R 0.5 -> F1 0.667;  t = 0.6: P 0.50, R 0.5 -> F1 0.5
#   t = 0.4: P 0.33, R 0.5 -> F1 0.400;  t = 0.3: P 0.50, R 1.0 -> F1 0.667
# The tie between 0.9 and 0.3 goes to the lowest threshold, as the task's np.argmax over
# precision_recall_curve's increasing thresholds does.
CASE_3 = ([1, 0, 0, 1], [0.9, 0.6, 0.4, 0.3], {"f1": 0.3})


@pytest.mark.parametrize("case", [CASE_1, CASE_2, CASE_3], ids=["case1", "case2", "f1_tie"])
def test_threshold_methods_on_hand_checked_cases(case):
    labels, scores, expected = case
    for method, threshold in expected.items():
        got = choose_thresholds(np.array(labels)[:, None], np.array(scores)[:, None], method)
        assert got.tolist() == [threshold], method


def test_thresholds_per_tag_and_the_default_for_one_class_tags():
    y = np.array([[0, 0, 0, 1], [0, 1, 0, 1], [1, 0, 0, 1], [1, 1, 0, 1]])
    p = np.array([[0.1, 0.9, 0.2, 0.3], [0.4, 0.6, 0.7, 0.4], [0.35, 0.4, 0.1, 0.5],
                  [0.8, 0.3, 0.3, 0.6]])
    for method in ("f1", "roc_elbow", "tpr_tnr", "prevalence"):
        t = choose_thresholds(y, p, method)
        assert t.shape == (4,)
        assert t[0] == CASE_1[2][method]  # column 0 is case 1
        assert t[2] == 0.5 and t[3] == 0.5  # no positives; no negatives


def test_f1_thresholds_reproduce_the_optimal_f1_on_the_data_they_were_chosen_on():
    y, p = random_problem(n=300, tags=4, seed=3)
    t = choose_thresholds(y, p, "f1")

    def f1(labels, decisions):
        tp = np.sum(labels & decisions)
        return 2 * tp / (labels.sum() + decisions.sum())

    for j in range(4):
        labels = y[:, j].astype(bool)
        best = max(f1(labels, p[:, j] >= c) for c in np.unique(p[:, j]))
        assert f1(labels, p[:, j] >= t[j]) == pytest.approx(best)
        assert sklearn_metrics.f1_score(labels, p[:, j] >= t[j]) == pytest.approx(best)


def test_prevalence_turns_each_tag_on_as_often_as_its_labels_are():
    """On the data they were chosen on, each tag is on in as many examples as it has
    positives, however the scores rank them; F1 on the same data turns more on."""
    y, p = random_problem(n=300, tags=4, seed=3)
    t = choose_thresholds(y, p, "prevalence")
    assert ((p >= t).sum(axis=0) == y.sum(axis=0)).all()
    assert (p >= choose_thresholds(y, p, "f1")).sum() > y.sum()
    # a tie at the k-th score: every tied example is on
    tied = choose_thresholds(np.array([[1], [0], [0]]), np.array([[0.5], [0.5], [0.1]]),
                             "prevalence")
    assert tied.tolist() == [0.5]


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match="unknown threshold method"):
        choose_thresholds([[1], [0]], [[0.2], [0.1]], "youden")
    with pytest.raises(ValueError, match="only 0 and 1"):
        choose_thresholds([[2], [0]], [[0.2], [0.1]])
    with pytest.raises(ValueError, match="examples, tags"):
        evaluate(np.zeros((3, 2)), np.zeros((3, 3)), [0.5, 0.5], ["a", "b"])
    with pytest.raises(ValueError, match="must agree"):
        evaluate(np.zeros((3, 2)), np.zeros((3, 2)), [0.5], ["a", "b"])
    with pytest.raises(ValueError, match="NaN"):
        evaluate([[1], [0]], [[np.nan], [0.1]], [0.5], ["a"])
