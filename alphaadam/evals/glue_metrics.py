"""GLUE metrics, computed locally with scikit-learn and scipy (``evaluate.load`` downloads scripts).

Every value is a fraction in [0, 1] (correlations in [-1, 1]); tables scale them.

========== ================================================ ===============================
name       definition                                       GLUE tasks that report it
========== ================================================ ===============================
accuracy   share of exact predictions                       all classification tasks
f1         F1 of the positive class (label 1)               MRPC, QQP
matthews   Matthews correlation coefficient                 CoLA
pearson    Pearson correlation of predictions and labels    STS-B
spearman   Spearman rank correlation                        STS-B
========== ================================================ ===============================

Degenerate inputs do not crash an evaluation. A model that predicts one class everywhere gets
Matthews 0 (scikit-learn's convention: the coefficient is undefined) and F1 0 when it never predicts
the positive class. The Pearson and Spearman correlations of a constant vector are undefined (0 / 0):
they are recorded as 0.0, the value of "no association", and the metric is named in the returned
``undefined`` list, so that a collapsed regression model scores 0 instead of dropping out of a table.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

CLASSIFICATION_METRICS = ("accuracy", "f1", "matthews")
REGRESSION_METRICS = ("pearson", "spearman")
METRICS = CLASSIFICATION_METRICS + REGRESSION_METRICS


def accuracy(predictions, labels) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(labels, predictions))


def f1(predictions, labels) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(labels, predictions, pos_label=1, average="binary", zero_division=0.0))


def matthews(predictions, labels) -> float:
    from sklearn.metrics import matthews_corrcoef

    with warnings.catch_warnings():  # constant inputs: sklearn returns 0 and may warn
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(matthews_corrcoef(labels, predictions))


def _is_constant(values: np.ndarray) -> bool:
    return values.size < 2 or bool(np.all(values == values[0]))


def pearson(predictions, labels) -> float:
    """Pearson's r; NaN when either vector is constant (see :func:`compute`)."""
    from scipy.stats import pearsonr

    p, y = np.asarray(predictions, dtype=float), np.asarray(labels, dtype=float)
    if _is_constant(p) or _is_constant(y):
        return math.nan
    return float(pearsonr(p, y).statistic)


def spearman(predictions, labels) -> float:
    """Spearman's rho; NaN when either vector is constant (see :func:`compute`)."""
    from scipy.stats import spearmanr

    p, y = np.asarray(predictions, dtype=float), np.asarray(labels, dtype=float)
    if _is_constant(p) or _is_constant(y):
        return math.nan
    return float(spearmanr(p, y).statistic)


FUNCTIONS = {"accuracy": accuracy, "f1": f1, "matthews": matthews, "pearson": pearson, "spearman": spearman}


def compute(names: Sequence[str], predictions, labels) -> dict:
    """``{name: value}`` for each metric in ``names``, plus ``undefined``: the correlations that were
    undefined (a constant vector) and are recorded as 0.0; absent when there are none.

    ``predictions`` are class ids for classification metrics and real values for correlations.
    """
    unknown = [n for n in names if n not in FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown GLUE metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)}")
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or predictions.ndim != 1:
        raise ValueError(
            f"predictions {predictions.shape} and labels {labels.shape} must be vectors of one length"
        )
    if labels.size == 0:
        raise ValueError("no examples to evaluate")
    values, undefined = {}, []
    for name in names:
        value = FUNCTIONS[name](predictions, labels)
        if math.isnan(value):
            undefined.append(name)
            value = 0.0
        values[name] = value
    if undefined:
        values["undefined"] = undefined
    return values
