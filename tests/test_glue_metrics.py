"""GLUE metrics against values worked out by hand, and their degenerate cases."""

import math

import pytest

from alphaadam.evals.glue_metrics import accuracy, compute, f1, matthews, pearson, spearman

# tp = 2 (positions 0, 4), tn = 1 (2), fp = 1 (1), fn = 1 (3)
PREDICTIONS = [1, 1, 0, 0, 1]
LABELS = [1, 0, 0, 1, 1]


def test_classification_metrics_by_hand():
    assert accuracy(PREDICTIONS, LABELS) == pytest.approx(3 / 5)
    # precision = recall = 2/3, so F1 = 2/3
    assert f1(PREDICTIONS, LABELS) == pytest.approx(2 / 3)
    # (tp tn - fp fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (2 - 1) / sqrt(3 * 3 * 2 * 2) = 1/6
    assert matthews(PREDICTIONS, LABELS) == pytest.approx(1 / 6)
    assert matthews([0, 1, 2, 2], [0, 1, 2, 2]) == pytest.approx(1.0)  # multi-class


def test_correlations_by_hand():
    # deviations (-1.5, -0.5, 0.5, 1.5) and (-1.5, 0.5, -0.5, 1.5): covariance sum 4, variance sums 5
    assert pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # the same ranks
    assert spearman([1.0, 2.0, 30.0, 400.0], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(1.0)  # monotone
    assert pearson([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)


def test_compute_records_every_named_metric():
    values = compute(["accuracy", "f1", "matthews"], PREDICTIONS, LABELS)
    assert values == pytest.approx({"accuracy": 0.6, "f1": 2 / 3, "matthews": 1 / 6})
    assert compute(["pearson", "spearman"], [0.5, 1.5, 2.0], [1.0, 2.0, 3.0])["spearman"] == pytest.approx(
        1.0
    )


def test_degenerate_predictions_do_not_crash():
    constant = compute(["accuracy", "f1", "matthews"], [0, 0, 0, 0], [0, 1, 0, 1])
    assert constant == {"accuracy": 0.5, "f1": 0.0, "matthews": 0.0}  # no positive prediction: F1 0
    # Correlations of a constant vector are undefined: recorded as 0.0 and named.
    flat = compute(["pearson", "spearman"], [2.5, 2.5, 2.5], [1.0, 2.0, 3.0])
    assert flat == {"pearson": 0.0, "spearman": 0.0, "undefined": ["pearson", "spearman"]}
    assert math.isnan(pearson([1.0, 1.0], [0.0, 1.0])) and math.isnan(spearman([0.0, 1.0], [2.0, 2.0]))
    assert compute(["accuracy"], [1], [1]) == {"accuracy": 1.0}  # one example


def test_bad_requests_say_what_is_wrong():
    with pytest.raises(ValueError, match="unknown GLUE metric.*bleu"):
        compute(["bleu"], [1], [1])
    with pytest.raises(ValueError, match="vectors of one length"):
        compute(["accuracy"], [1, 0], [1])
    with pytest.raises(ValueError, match="no examples"):
        compute(["accuracy"], [], [])
