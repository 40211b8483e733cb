"""Macro precision, recall and F1 of a classifier, as the paper's Table 2 reports them.

The authors score with MMPretrain's SingleLabelMetric (average "macro"): per-class precision,
recall and F1 over every class of the dataset's list, then their plain means; a class the test set
never holds and the model never predicts counts 0, as does any undefined ratio. That is also
scikit-learn's `precision_recall_fscore_support(labels=range(n), average="macro",
zero_division=0)`, which the tests compare against. Written here on a confusion matrix so the
package needs no scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassScores:
    """Macro means (0-1) and the per-class values they come from, in the class list's order."""

    precision: float
    recall: float
    f1: float
    accuracy: float
    per_class: dict[str, dict[str, float]]
    support: int

    def as_dict(self) -> dict[str, object]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "accuracy": self.accuracy,
            "support": self.support,
            "per_class": self.per_class,
        }


def confusion(truth: Sequence[int], predicted: Sequence[int], classes: int) -> np.ndarray:
    """counts[t, p]: images of class t predicted as p."""
    t, p = np.asarray(truth, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"truth and predictions differ in shape: {t.shape} and {p.shape}")
    if len(t) and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= classes):
        raise ValueError(f"a class index lies outside 0..{classes - 1}")
    counts = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(counts, (t, p), 1)
    return counts


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros(len(numerator)), where=denominator > 0)


def macro_scores(truth: Sequence[int], predicted: Sequence[int], names: Sequence[str]) -> ClassScores:
    counts = confusion(truth, predicted, len(names))
    hits = np.diag(counts).astype(np.float64)
    precision = _ratio(hits, counts.sum(axis=0).astype(np.float64))
    recall = _ratio(hits, counts.sum(axis=1).astype(np.float64))
    f1 = _ratio(2 * precision * recall, precision + recall)
    total = int(counts.sum())
    per_class = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(names, precision, recall, f1, counts.sum(axis=1))
    }
    return ClassScores(
        precision=float(precision.mean()),
        recall=float(recall.mean()),
        f1=float(f1.mean()),
        accuracy=float(hits.sum() / total) if total else 0.0,
        per_class=per_class,
        support=total,
    )
