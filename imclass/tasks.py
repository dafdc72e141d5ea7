"""What differs between kinds of classification: head size, loss, logits to probabilities,
decisions, the training loop's accuracy, thresholds and the test metrics.

- multiclass: softmax over the classes, the most probable one wins;
- binary: the same two-way softmax, but the positive class (the second name, sorted) wins
  when its probability reaches one threshold tuned on validation for the best F1;
- multilabel: a sigmoid per label, binary cross-entropy, one threshold per label;
- hierarchical: softmax over the leaves; a parent's probability is the sum of its children's,
  so the predicted path is always the predicted leaf's ancestors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from imclass import decisions
from imclass.balance import WEIGHTED, class_weights, positive_weights
from imclass.errors import ConfigError

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _mse_one_hot(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between softmax probabilities and one-hot targets (the textbook form)."""
    one_hot = F.one_hot(target, logits.shape[1]).to(logits.dtype)
    return F.mse_loss(logits.softmax(dim=1), one_hot)


def argmax_hits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of each image's accuracy (1 right, 0 wrong): single-label tasks."""
    return (logits.argmax(1) == target).sum()


def confusion_tally(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A batch's confusion matrix at the argmax, flattened (true class * K + predicted), on the
    logits' device: summed over validation batches without a host sync per batch."""
    k = logits.shape[1]
    return torch.bincount(target * k + logits.argmax(1), minlength=k * k).float()


def class_scores(tally: np.ndarray) -> dict[str, float]:
    """Balanced accuracy (the mean recall of the classes that occur, as scikit-learn's
    balanced_accuracy_score) and macro F1 (over the classes that occur or are predicted) of a
    summed `confusion_tally`."""
    k = int(round(len(tally) ** 0.5))
    m = np.asarray(tally, dtype=np.float64).reshape(k, k)
    hits, support, predicted = np.diag(m), m.sum(1), m.sum(0)
    seen, involved = support > 0, support + predicted > 0
    recall = hits[seen] / support[seen]
    f1 = 2 * hits[involved] / (support + predicted)[involved]
    return {"balanced_acc": float(recall.mean()) if seen.any() else math.nan,
            "macro_f1": float(f1.mean()) if involved.any() else math.nan}


def _unknown_loss(task: str, name: str, losses: dict) -> ConfigError:
    return ConfigError(f"unknown loss '{name}' for {task}; valid: {', '.join(losses)}")


@dataclass(frozen=True)
class Multiclass:
    name: str = "multiclass"

    def num_outputs(self, num_classes: int) -> int:
        return num_classes

    def loss(self, name: str, label_smoothing: float = 0.0, balance=None) -> Loss:
        """The training loss; with `balance` (imclass.balance.Balance) weighing classes, each
        class's images weighed by its class weight (a weighted mean over the batch)."""
        weight = None
        if balance is not None and balance.method in WEIGHTED:
            if name != "cross-entropy":
                raise ConfigError(f"--balance {balance.method} weighs the cross-entropy loss; "
                                  f"with --loss {name} use --balance sampler")
            weight = class_weights(list(balance.counts), balance.method)
        losses: dict[str, Loss] = {
            "cross-entropy": lambda z, y: F.cross_entropy(
                z, y, weight=None if weight is None else weight.to(z.device),
                label_smoothing=label_smoothing),
            "mse": _mse_one_hot,
        }
        if name not in losses:
            raise _unknown_loss(self.name, name, losses)
        return losses[name]

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().softmax(dim=1)

    def predictions(self, probabilities: np.ndarray, thresholds=None) -> np.ndarray:
        """Class index per image."""
        return decisions.argmax_class(probabilities)

    def hits(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return argmax_hits(logits, target)

    def tally(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Counts that sum over batches to what `scores` reads (validation)."""
        return confusion_tally(logits, target)

    def scores(self, tally: np.ndarray) -> dict[str, float]:
        return class_scores(tally)

    # whether tune_thresholds fits anything (else training skips the validation pass for it)
    fits_thresholds = False

    def tune_thresholds(self, y_true: np.ndarray, probs: np.ndarray) -> list | None:
        """None: the most probable class wins; binary and multilabel fit thresholds."""
        return None

    def metrics(self, y_true, probs, class_names, thresholds=None) -> dict:
        from imclass.metrics import classification_metrics
        return {"task": self.name, **classification_metrics(y_true, probs, class_names)}


@dataclass(frozen=True)
class Binary(Multiclass):
    name: str = "binary"

    def predictions(self, probabilities: np.ndarray, thresholds=None) -> np.ndarray:
        """1 (the positive class) where its probability reaches the threshold, else 0."""
        return decisions.positive_at_threshold(probabilities, thresholds)

    fits_thresholds = True

    def tune_thresholds(self, y_true, probs):
        """The positive class's threshold (imclass.metrics.ThresholdFit), in a list."""
        from imclass.metrics import fit_threshold
        return [fit_threshold(y_true == 1, probs[:, 1])]

    def metrics(self, y_true, probs, class_names, thresholds=None) -> dict:
        """Every decision-based figure (accuracy, per-class precision and recall, the
        confusion matrix) at the tuned threshold, as the galleries show it."""
        from imclass.metrics import binary_metrics, classification_metrics
        return {**classification_metrics(y_true, probs, class_names,
                                         self.predictions(probs, thresholds)),
                **binary_metrics(y_true, probs[:, 1], (thresholds or [0.5])[0], class_names),
                "task": self.name}


@dataclass(frozen=True)
class Multilabel:
    name: str = "multilabel"

    def num_outputs(self, num_classes: int) -> int:
        return num_classes

    def loss(self, name: str, label_smoothing: float = 0.0, balance=None) -> Loss:
        """Binary cross-entropy per label; with `balance` weighing classes, each label's
        positives weighed against its negatives (pos_weight)."""
        pos_weight = None
        if balance is not None and balance.method in WEIGHTED:
            pos_weight = positive_weights(list(balance.counts), balance.images, balance.method)

        def bce(z, y):  # smoothing pulls targets towards 0.5 by label_smoothing / 2
            target = y * (1 - label_smoothing) + label_smoothing / 2
            return F.binary_cross_entropy_with_logits(
                z, target, pos_weight=None if pos_weight is None else pos_weight.to(z.device))
        losses: dict[str, Loss] = {"cross-entropy": bce, "bce": bce}
        if name not in losses:
            raise _unknown_loss(self.name, name, losses)
        return losses[name]

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().sigmoid()

    def predictions(self, probabilities: np.ndarray, thresholds=None) -> np.ndarray:
        """Multi-hot: each label whose probability reaches its threshold."""
        return decisions.labels_at_thresholds(probabilities, thresholds)

    def hits(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per image, the share of labels decided right at 0.5 (1 - Hamming loss), summed."""
        return ((logits > 0) == (target > 0.5)).float().mean(1).sum()

    def tally(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per label, true and false positives and negatives at 0.5: [K * 4] counts."""
        decided, truth = logits > 0, target > 0.5
        return torch.stack([(decided & truth).sum(0), (decided & ~truth).sum(0),
                            (~decided & truth).sum(0), (~decided & ~truth).sum(0)],
                           1).flatten().float()

    def scores(self, tally: np.ndarray) -> dict[str, float]:
        """Balanced accuracy: per label the mean of its true positive and true negative
        rates (those defined), averaged over labels; macro F1 over the labels that occur or
        are predicted."""
        from imclass.metrics import label_balanced_accuracy
        tp, fp, fn, tn = np.asarray(tally, dtype=np.float64).reshape(-1, 4).T
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = 2 * tp / (2 * tp + fp + fn)
        return {"balanced_acc": label_balanced_accuracy(tp, fp, fn, tn),
                "macro_f1": float(np.nanmean(f1)) if np.isfinite(f1).any() else math.nan}

    fits_thresholds = True

    def tune_thresholds(self, y_true, probs):
        """Each label's threshold (imclass.metrics.ThresholdFit)."""
        from imclass.metrics import fit_threshold
        return [fit_threshold(y_true[:, k] > 0.5, probs[:, k]) for k in range(probs.shape[1])]

    def metrics(self, y_true, probs, class_names, thresholds=None) -> dict:
        from imclass.metrics import multilabel_metrics
        t = thresholds or [0.5] * probs.shape[1]
        return {"task": self.name, **multilabel_metrics(y_true, probs, class_names, t)}


@dataclass(frozen=True)
class Hierarchical(Multiclass):
    name: str = "hierarchical"
    sep: str = "/"

    def metrics(self, y_true, probs, class_names, thresholds=None) -> dict:
        from imclass.metrics import hierarchical_metrics
        return {**super().metrics(y_true, probs, class_names),
                **hierarchical_metrics(y_true, probs, class_names, self.sep),
                "task": self.name}


def get_task(name: str, hierarchy_sep: str = "/"):
    tasks = {"multiclass": Multiclass(), "binary": Binary(), "multilabel": Multilabel(),
             "hierarchical": Hierarchical(sep=hierarchy_sep)}
    if name not in tasks:
        raise ConfigError(f"unknown task '{name}'; valid: {', '.join(tasks)}")
    return tasks[name]
