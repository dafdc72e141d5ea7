"""Each task's decision from its probabilities, in numpy: the class at the argmax
(multiclass, hierarchical: the leaf), the positive class at its threshold (binary), every
label at its own threshold (multilabel). imclass.tasks decides with these, and so does the
predictor, which imports no torch when it scores with ONNX Runtime."""

from __future__ import annotations

import numpy as np


def argmax_class(probabilities: np.ndarray, thresholds=None) -> np.ndarray:
    """Class index per image."""
    return probabilities.argmax(1)


def positive_at_threshold(probabilities: np.ndarray, thresholds=None) -> np.ndarray:
    """1 (the positive class) where its probability reaches the threshold, else 0."""
    return (probabilities[:, 1] >= (thresholds[0] if thresholds else 0.5)).astype(int)


def labels_at_thresholds(probabilities: np.ndarray, thresholds=None) -> np.ndarray:
    """Multi-hot: each label whose probability reaches its threshold."""
    return probabilities >= (np.asarray(thresholds) if thresholds else 0.5)


DECISIONS = {"multiclass": argmax_class, "hierarchical": argmax_class,
             "binary": positive_at_threshold, "multilabel": labels_at_thresholds}


def decide(task: str, probabilities: np.ndarray, thresholds=None) -> np.ndarray:
    return DECISIONS[task](probabilities, thresholds)
