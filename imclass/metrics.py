"""Test-set metrics with scikit-learn: accuracy, precision/recall/F1, ROC AUC, confusion matrix."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

from imclass.training import autocast


@torch.no_grad()
def predict_probabilities(model, batches, task, device) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities [N, K], true labels [N]) over every batch, in order."""
    model.eval()
    probs, labels = [], []
    for x, y in batches:
        with autocast(device):
            probs.append(task.probabilities(model(x)).cpu())
        labels.append(y.cpu())
    return torch.cat(probs).numpy().astype(np.float64), torch.cat(labels).numpy()


def auc_per_class(y_true: np.ndarray, probs: np.ndarray) -> list[float | None]:
    """One-vs-rest ROC AUC per class; None where the class has no positives or no negatives."""
    out = []
    for k in range(probs.shape[1]):
        positives = y_true == k
        if positives.all() or not positives.any():
            out.append(None)
        else:
            out.append(float(skm.roc_auc_score(positives, probs[:, k])))
    return out


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, class_names) -> dict:
    """The metrics.json 'test' block for a multiclass problem."""
    k = len(class_names)
    labels = list(range(k))
    y_pred = probs.argmax(1)
    out = {"accuracy": float(skm.accuracy_score(y_true, y_pred)), "count": int(len(y_true))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # a class never predicted: 0
        for avg in ("macro", "weighted"):
            p, r, f, _ = skm.precision_recall_fscore_support(
                y_true, y_pred, labels=labels, average=avg, zero_division=0)
            out |= {f"precision_{avg}": float(p), f"recall_{avg}": float(r), f"f1_{avg}": float(f)}
        p, r, f, support = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=None, zero_division=0)
    aucs = auc_per_class(y_true, probs)
    present = [a for a in aucs if a is not None]
    # Macro one-vs-rest AUC over the classes that occur (sklearn's own refuses missing ones).
    out["roc_auc_macro"] = float(np.mean(present)) if present else None
    out["per_class"] = {
        name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
               "support": int(support[i]), "auc": aucs[i]}
        for i, name in enumerate(class_names)}
    out["confusion_matrix"] = skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return out


def roc_curves(y_true: np.ndarray, probs: np.ndarray) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """(false positive rate, true positive rate) per class, one-vs-rest."""
    curves = []
    for k in range(probs.shape[1]):
        positives = y_true == k
        if positives.all() or not positives.any():
            curves.append(None)
        else:
            fpr, tpr, _ = skm.roc_curve(positives, probs[:, k])
            curves.append((fpr, tpr))
    return curves
