"""Test-set metrics with scikit-learn: accuracy, precision/recall/F1, ROC AUC, confusion matrix."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

from imclass.devices import autocast
from imclass.pixel_model import average_views

HEADLINES = {  # the figures the console line and the summary cards lead with, per task
    "multiclass": (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"),
                   ("top_3", "top-3 accuracy"), ("f1_macro", "macro F1"),
                   ("roc_auc_macro", "ROC AUC")),
    "binary": (("accuracy_at_threshold", "accuracy"), ("balanced_accuracy",
                                                        "balanced accuracy"),
               ("f1_at_threshold", "F1 (positive class)"), ("roc_auc", "ROC AUC"),
               ("pr_auc", "PR AUC")),
    "multilabel": (("f1_micro", "micro F1"), ("f1_macro", "macro F1"),
                   ("balanced_accuracy", "balanced accuracy"),
                   ("mean_average_precision", "mAP"), ("subset_accuracy", "subset accuracy")),
    "hierarchical": (("accuracy", "leaf accuracy"), ("balanced_accuracy",
                                                      "leaf balanced accuracy"),
                     ("hierarchical_f1", "hierarchical F1"), ("f1_macro", "leaf macro F1")),
}


def headline(m: dict) -> str:
    """One line of a metrics dict's leading figures, as the console prints it."""
    return ", ".join(f"{label} {m[key]:.4f}" for key, label in HEADLINES[m.get("task",
                     "multiclass")] if m.get(key) is not None)


def recall_line(m: dict, shown: int = 8) -> str:
    """The per-class (per-label) recall, lowest first, with the images counted: 'recall per
    class, lowest first: bees 0.62 of 13, ants 0.95 of 130'."""
    rows = sorted(((v["recall"], name, v["support"]) for name, v in m["per_class"].items()
                   if v["support"]), key=lambda r: r[0])
    kind = "label" if m.get("task") == "multilabel" else "class"
    more = f", ... ({len(rows) - shown} more)" if len(rows) > shown else ""
    return (f"recall per {kind}, lowest first: "
            + ", ".join(f"{name} {r:.2f} of {n}" for r, name, n in rows[:shown]) + more)


class EmbeddingTap:
    """The penultimate features of the images at `rows` (sorted positions in the scored
    order), kept from the pass that scores them: the report's embedding figure then needs no
    second pass over the test images (on a photo run that pass was a fifth of `imclass
    evaluate`). Written into one array made at the first batch, as predict_probabilities
    does its own (small arrays kept between batches pin glibc's heap)."""

    def __init__(self, rows: np.ndarray):
        self.rows = np.asarray(rows, dtype=np.int64)
        self.features = np.zeros((0, 0), np.float32)

    def take(self, start: int, features: torch.Tensor) -> None:
        """Keep the rows among positions start .. start + len(features)."""
        if not self.features.size:
            self.features = np.empty((len(self.rows), features.shape[1]), np.float32)
        first, end = np.searchsorted(self.rows, [start, start + len(features)])
        if end > first:
            index = torch.as_tensor(self.rows[first:end] - start, device=features.device)
            self.features[first:end] = features[index].float().cpu().numpy()


@torch.no_grad()
def predict_probabilities(model, batches, task, device, flips=(), shift: int = 0,
                          tap: EmbeddingTap | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities [N, K], true labels [N] or multi-hot [N, K]) over every batch, in order.

    With `flips` (tensor dims, -1 horizontal, -2 vertical) and `shift` (px), test-time
    augmentation: the probabilities are averaged over the image's views as the run's
    PixelModel averages them (imclass.pixel_model.average_views). With `tap` (a model with
    `forward_with_embedding`), the features of its rows are kept on the way.
    """
    model.eval()
    # Written into arrays made once, not gathered from a list of small per-batch tensors: the
    # list's tensors, allocated between each batch's large ones, pinned glibc's heap, which
    # then grew by every batch's pixels (+3.1 GB over 20,000 images at 160 px, tests/test_memory).
    probs = labels = None
    done = 0
    black = batches.norm.apply(torch.zeros(1, len(batches.norm.mean), 1, 1, device=device))
    for x, y in batches:
        with autocast(device):
            if tap is None:
                logits = model(x)
            else:
                logits, features = model.forward_with_embedding(x)
                tap.take(done, features)
            p = average_views(lambda view: task.probabilities(model(view)), x, flips, shift,
                              black, first=task.probabilities(logits))
        if probs is None:
            total = len(batches.labels)
            probs = np.empty((total, *p.shape[1:]), dtype=np.float64)
            labels = np.empty((total, *y.shape[1:]), dtype=y.cpu().numpy().dtype)
        probs[done:done + len(p)] = p.float().cpu().numpy()
        labels[done:done + len(y)] = y.cpu().numpy()
        done += len(p)
    if probs is None:  # no batch at all: an empty set
        return np.zeros((0, 0)), np.zeros(0, dtype=np.int64)
    return probs[:done], labels[:done]


def _one_vs_rest(y_true: np.ndarray, probs: np.ndarray, fn) -> list:
    """fn(is_class_k, score_k) for each class k; None where class k has no positives or no
    negatives, since neither an AUC nor a ROC curve is defined there. `y_true` is class
    indices [N] or, for multilabel, multi-hot rows [N, K]."""
    out = []
    for k in range(probs.shape[1]):
        positives = y_true[:, k] > 0.5 if y_true.ndim == 2 else y_true == k
        defined = positives.any() and not positives.all()
        out.append(fn(positives, probs[:, k]) if defined else None)
    return out


def auc_per_class(y_true: np.ndarray, probs: np.ndarray) -> list[float | None]:
    """One-vs-rest ROC AUC per class."""
    return _one_vs_rest(y_true, probs, lambda pos, score: float(skm.roc_auc_score(pos, score)))


def roc_curves(y_true: np.ndarray, probs: np.ndarray) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """(false positive rate, true positive rate) per class, one-vs-rest."""
    return _one_vs_rest(y_true, probs, lambda pos, score: skm.roc_curve(pos, score)[:2])


def pr_curves(y_true: np.ndarray, probs: np.ndarray) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """(recall, precision) per class, one-vs-rest."""
    def curve(pos, score):
        precision, recall, _ = skm.precision_recall_curve(pos, score)
        return recall, precision
    return _one_vs_rest(y_true, probs, curve)


def average_precision_per_class(y_true: np.ndarray, probs: np.ndarray) -> list[float | None]:
    return _one_vs_rest(y_true, probs,
                        lambda pos, score: float(skm.average_precision_score(pos, score)))


def averaged_roc(y_true: np.ndarray, probs: np.ndarray) -> dict[str, tuple]:
    """Micro-averaged (every image-class pair pooled) and macro-averaged (the mean of the
    per-class curves on a common false-positive grid) ROC curves, each (fpr, tpr, auc)."""
    k = probs.shape[1]
    one_hot = y_true > 0.5 if y_true.ndim == 2 else np.eye(k, dtype=bool)[y_true]
    fpr, tpr, _ = skm.roc_curve(one_hot.ravel(), probs.ravel())
    out = {"micro": (fpr, tpr, float(skm.auc(fpr, tpr)))}
    curves = [c for c in roc_curves(y_true, probs) if c is not None]
    if curves:
        grid = np.linspace(0, 1, 201)
        mean_tpr = np.mean([np.interp(grid, f, t) for f, t in curves], axis=0)
        out["macro"] = (grid, mean_tpr, float(skm.auc(grid, mean_tpr)))
    return out


def top_k_accuracy(y_true: np.ndarray, probs: np.ndarray, ks=(1, 3, 5)) -> dict[str, float]:
    """Share of images whose true class is among the k most probable, for each k < classes."""
    k_all = probs.shape[1]
    top = {"top_1": float((probs.argmax(1) == y_true).mean())}  # sklearn wants 1-D for 2 classes
    return top | {f"top_{k}": float(skm.top_k_accuracy_score(y_true, probs, k=k,
                                                              labels=list(range(k_all))))
                  for k in ks if 1 < k < k_all}


def calibration(y_true: np.ndarray, probs: np.ndarray, bins: int = 15) -> dict:
    """Top-label calibration: in equal-width confidence bins, mean confidence against accuracy.
    The expected calibration error (ECE) is their gap, weighted by the share of images per bin.
    Written here because scikit-learn's calibration_curve covers one binary score, not the
    top label of a multiclass model, and gives no bin counts for the ECE."""
    confidence = probs.max(1)
    correct = probs.argmax(1) == y_true
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        members = which == b
        if not members.any():
            continue
        conf, acc = float(confidence[members].mean()), float(correct[members].mean())
        table.append({"low": float(edges[b]), "high": float(edges[b + 1]), "confidence": conf,
                      "accuracy": acc, "count": int(members.sum())})
        ece += members.mean() * abs(acc - conf)
    return {"ece": float(ece), "bins": table}


def most_confused(matrix: np.ndarray, class_names, n: int = 10) -> list[dict]:
    """The off-diagonal cells of the confusion matrix with the most images, largest first."""
    pairs = [(int(matrix[i, j]), i, j) for i in range(len(class_names))
             for j in range(len(class_names)) if i != j and matrix[i, j] > 0]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    return [{"true": class_names[i], "predicted": class_names[j], "count": c}
            for c, i, j in pairs[:n]]


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, class_names,
                           y_pred: np.ndarray | None = None) -> dict:
    """The metrics.json 'test' block for a single-label problem; the decisions `y_pred`
    default to the most probable class (a binary run passes its thresholded ones)."""
    k = len(class_names)
    labels = list(range(k))
    y_pred = probs.argmax(1) if y_pred is None else y_pred
    out = {"accuracy": float(skm.accuracy_score(y_true, y_pred)), "count": int(len(y_true))}
    with warnings.catch_warnings():  # a class predicted but absent from the set: said below
        warnings.simplefilter("ignore", UserWarning)
        out["balanced_accuracy"] = float(skm.balanced_accuracy_score(y_true, y_pred))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # a class never predicted: 0
        for avg in ("macro", "weighted"):
            p, r, f, _ = skm.precision_recall_fscore_support(
                y_true, y_pred, labels=labels, average=avg, zero_division=0)
            out |= {f"precision_{avg}": float(p), f"recall_{avg}": float(r), f"f1_{avg}": float(f)}
        p, r, f, support = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=None, zero_division=0)
    aucs = auc_per_class(y_true, probs)
    aps = average_precision_per_class(y_true, probs)
    # Macro averages over the classes that occur (sklearn's own refuses missing ones).
    out["roc_auc_macro"] = _mean_defined(aucs)
    out["roc_auc_micro"] = averaged_roc(y_true, probs)["micro"][2]
    out["average_precision_macro"] = _mean_defined(aps)
    out |= top_k_accuracy(y_true, probs)
    calib = calibration(y_true, probs)
    out["ece"] = calib["ece"]
    out["calibration"] = calib["bins"]
    out["per_class"] = {
        name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
               "support": int(support[i]), "auc": aucs[i], "average_precision": aps[i]}
        for i, name in enumerate(class_names)}
    matrix = skm.confusion_matrix(y_true, y_pred, labels=labels)
    out["confusion_matrix"] = matrix.tolist()
    out["most_confused"] = most_confused(matrix, list(class_names))
    return out


def _mean_defined(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


# Validation images of each kind (positive, negative) a threshold is tuned on, at least: on 8
# images a tuned threshold went to 0.998 and test F1 fell to 0.18 (issue 32).
MIN_THRESHOLD_IMAGES = 20
THRESHOLD_RESAMPLES = 200  # bootstrap resamples that measure a tuned threshold's spread


@dataclass(frozen=True)
class ThresholdFit:
    """A decision threshold and how far to trust it: tuned (with the 10th-90th percentile of
    the thresholds tuned on bootstrap resamples of validation), or kept at 0.5 (too few
    positive or negative images to tune on)."""
    value: float
    tuned: bool
    positives: int
    negatives: int
    spread: tuple[float, float] | None = None

    def describe(self, name: str) -> str:
        if not self.tuned:
            return (f"{name} kept at 0.5 (validation holds {self.positives} positive and "
                    f"{self.negatives} negative images, fewer than {MIN_THRESHOLD_IMAGES} of "
                    "each to tune it on)")
        low, high = self.spread
        return f"{name} {self.value:.3f} (bootstrap 10-90%: {low:.3f}-{high:.3f})"


def fit_threshold(positives: np.ndarray, score: np.ndarray, seed: int = 0) -> ThresholdFit:
    """The best-F1 threshold on validation when there are enough images of each kind, with
    its bootstrap spread; else 0.5."""
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if min(n_pos, n_neg) < MIN_THRESHOLD_IMAGES:
        return ThresholdFit(0.5, False, n_pos, n_neg)
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(score), len(score)) for _ in range(THRESHOLD_RESAMPLES)]
    resampled = [best_f1_threshold(positives[d], score[d]) for d in draws]
    low, high = np.percentile(resampled, [10, 90])
    return ThresholdFit(best_f1_threshold(positives, score), True, n_pos, n_neg,
                        (float(low), float(high)))


def best_f1_threshold(positives: np.ndarray, score: np.ndarray) -> float:
    """The decision threshold on `score` with the highest F1 (0.5 when F1 is undefined:
    no positive, or no negative, among the images)."""
    if not positives.any() or positives.all():
        return 0.5
    precision, recall, thresholds = skm.precision_recall_curve(positives, score)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def _at_threshold(positives: np.ndarray, decided: np.ndarray) -> dict:
    tp = int((decided & positives).sum())
    fp = int((decided & ~positives).sum())
    fn = int((~decided & positives).sum())
    tn = int((~decided & ~positives).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn,
            "tn": tn}


def binary_metrics(y_true: np.ndarray, score: np.ndarray, threshold: float, class_names) -> dict:
    """The positive class's figures at the threshold tuned on validation, and its ROC/PR AUC."""
    positives = y_true == 1
    at = _at_threshold(positives, score >= threshold)
    defined = positives.any() and not positives.all()
    return {"positive_class": class_names[1], "threshold": float(threshold),
            "accuracy_at_threshold": float(((score >= threshold) == positives).mean()),
            **{f"{k}_at_threshold": v for k, v in at.items()},
            "roc_auc": float(skm.roc_auc_score(positives, score)) if defined else None,
            "pr_auc": float(skm.average_precision_score(positives, score)) if defined else None}


def label_balanced_accuracy(tp, fp, fn, tn) -> float:
    """Multilabel balanced accuracy from per-label counts (arrays): per label the mean of its
    true positive and true negative rates (those defined: a label's images are positive or
    negative), averaged over the labels; NaN without labels."""
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.stack([tp / (tp + fn), tn / (tn + fp)])
    return float(np.nanmean(rates, axis=0).mean()) if len(tp) else math.nan


def multilabel_metrics(y_true: np.ndarray, probs: np.ndarray, class_names,
                       thresholds) -> dict:
    """Per-label and averaged figures of a multilabel model, each label decided at its own
    threshold (tuned on validation)."""
    truth = y_true > 0.5
    decided = probs >= np.asarray(thresholds)[None, :]
    aucs = auc_per_class(y_true, probs)
    aps = average_precision_per_class(y_true, probs)
    per_label = {name: {**_at_threshold(truth[:, k], decided[:, k]), "support": int(truth[:, k].sum()),
                        "threshold": float(thresholds[k]), "auc": aucs[k],
                        "average_precision": aps[k]}
                 for k, name in enumerate(class_names)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        averaged = {f"{m}_{avg}": float(fn(truth, decided, average=avg, zero_division=0))
                    for avg in ("micro", "macro") for m, fn in (
                        ("precision", skm.precision_score), ("recall", skm.recall_score),
                        ("f1", skm.f1_score))}
    return {"count": int(len(truth)), "subset_accuracy": float((decided == truth).all(1).mean()),
            "balanced_accuracy": label_balanced_accuracy(
                *(np.array([m[k] for m in per_label.values()], dtype=np.float64)
                  for k in ("tp", "fp", "fn", "tn"))),
            "hamming_loss": float(skm.hamming_loss(truth, decided)),
            "label_accuracy": float((decided == truth).mean()), **averaged,
            "mean_average_precision": _mean_defined(aps), "roc_auc_macro": _mean_defined(aucs),
            "roc_auc_micro": averaged_roc(y_true, probs)["micro"][2],
            "thresholds": [float(t) for t in thresholds], "per_class": per_label}


def hierarchical_metrics(y_true: np.ndarray, probs: np.ndarray, class_names, sep: str) -> dict:
    """Accuracy and macro F1 at every level of the tree (a parent's probability is the sum of
    its leaves', and the predicted node at a level is the predicted leaf's ancestor, so
    levels never contradict each other), and hierarchical precision / recall / F1: the
    overlap of the true and predicted ancestor sets (Kiritchenko et al. 2005)."""
    from imclass.data.labels import ancestors, at_level, depth

    y_pred = probs.argmax(1)
    per_level = {}
    for level in range(1, depth(class_names, sep) + 1):
        nodes = at_level(class_names, level, sep)
        true_nodes = [nodes[i] for i in y_true]
        pred_nodes = [nodes[i] for i in y_pred]
        per_level[str(level)] = {
            "accuracy": float(np.mean([a == b for a, b in zip(true_nodes, pred_nodes)])),
            "f1_macro": float(skm.f1_score(true_nodes, pred_nodes, average="macro",
                                           labels=sorted(set(nodes)), zero_division=0)),
            "nodes": len(set(nodes))}
    paths = [set(ancestors(name, sep)) for name in class_names]
    overlap = sum(len(paths[t] & paths[p]) for t, p in zip(y_true, y_pred))
    h_precision = overlap / max(1, sum(len(paths[p]) for p in y_pred))
    h_recall = overlap / max(1, sum(len(paths[t]) for t in y_true))
    h_f1 = 2 * h_precision * h_recall / (h_precision + h_recall) if overlap else 0.0
    return {"per_level": per_level, "hierarchical_precision": h_precision,
            "hierarchical_recall": h_recall, "hierarchical_f1": h_f1}
