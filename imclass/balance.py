"""Imbalanced classes: how training compensates when some classes have far fewer images.

The ways, for every task (`--balance`):
- weights: the loss weighs each class by the inverse of its training count, normalised so that
  an image of average weight counts 1 (scikit-learn's "balanced" class weights: n / (k * n_c));
  multilabel: each label's positives weighed by negatives / positives (BCE's pos_weight);
- sqrt: the same with the inverse square root of the count (multilabel: of negatives /
  positives), halfway on a log scale between no weighting and inverse frequency;
- effective: the same with Cui et al.'s "effective number of samples" (CVPR 2019), w_c
  proportional to (1 - beta) / (1 - beta ** n_c): between no weighting (beta 0) and inverse
  frequency (beta -> 1), it weighs a very rare class less extremely;
- sampler: batches drawn with replacement so that each class is drawn equally often (each
  image with probability proportional to 1 / its class's count, torch.multinomial, as
  torch.utils.data.WeightedRandomSampler does); the loss unweighted.
`auto` turns one on when the largest class has more than AUTO_RATIO times the images of the
smallest, and leaves a balanced set (Fashion-MNIST) untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from imclass.errors import ConfigError

METHODS = ("auto", "weights", "sqrt", "effective", "sampler", "none")
WEIGHTED = ("weights", "sqrt", "effective")  # the methods that weigh the loss
# Largest over smallest class count above which `auto` balances. The audit warns at 10x;
# below 3x the measured gain is within seed noise (docs/benchmarks.md, "Imbalanced classes").
AUTO_RATIO = 3.0
# What `auto` uses (bench/imbalance.py; docs/benchmarks.md, "Imbalanced classes"; test sets
# as imbalanced as training). The square root raised the rare classes' median recall by 6
# points on Fashion-MNIST folders at 10:1 (8 seeds), 17 at 50:1 and 30 on photo-like JPEGs at
# 10:1, within a point of plain accuracy each time; inverse frequency and the effective
# number raised it more at 50:1 and on the photos, but cost 3 to 10 points of plain accuracy.
AUTO_METHOD = "sqrt"
EFFECTIVE_BETA = 0.999  # Cui et al.'s beta for up to a few thousand images per class


@dataclass(frozen=True)
class Balance:
    """The method a run trains with, and why (for the console and run.json)."""
    method: str  # weights, sqrt, effective, sampler or none
    reason: str
    counts: tuple[int, ...]  # training images per class (multilabel: positives per label)
    images: int  # training images

    @property
    def ratio(self) -> float:
        return spread(self.counts)

    def describe(self) -> str:
        what = {"weights": "class-weighted loss (inverse frequency)",
                "sqrt": "class-weighted loss (inverse square root of frequency)",
                "effective": "class-weighted loss (effective number of samples)",
                "sampler": "classes drawn evenly", "none": "none"}[self.method]
        return f"{what} ({self.reason})"

    def as_dict(self) -> dict:
        return {"method": self.method, "reason": self.reason, "counts": list(self.counts),
                "images": self.images, "ratio": self.ratio}


def resolve(requested: str, counts: list[int], images: int) -> Balance:
    """The method for a training split of `images` with these per-class counts."""
    if requested not in METHODS:
        raise ConfigError(f"unknown --balance '{requested}'; valid: {', '.join(METHODS)}")
    ratio = spread(counts)
    said = f"the largest class has {ratio:.1f}x the images of the smallest"
    if requested != "auto":
        method, reason = requested, f"--balance {requested}; {said}"
    elif ratio > AUTO_RATIO:
        method, reason = AUTO_METHOD, f"{said}; --balance none turns it off"
    else:
        method, reason = "none", f"{said}, within {AUTO_RATIO:g}x"
    return Balance(method, reason, tuple(counts), images)


def spread(counts) -> float:
    """The largest class count over the smallest (classes with none left out)."""
    present = [c for c in counts if c > 0]
    return max(present) / min(present) if present else 1.0


def class_weights(counts: list[int], method: str) -> torch.Tensor:
    """Per-class loss weights whose mean over the training images is 1 (so the learning rate
    means what it did unweighted). A class with no training image gets weight 0."""
    n = torch.tensor(counts, dtype=torch.float64)
    if method == "weights":
        raw = 1 / n
    elif method == "sqrt":
        raw = n ** -0.5
    elif method == "effective":
        raw = (1 - EFFECTIVE_BETA) / (1 - EFFECTIVE_BETA ** n)
    else:
        raise ValueError(method)
    raw = torch.where(n > 0, raw, torch.zeros_like(raw))
    return (raw * n.sum() / (raw * n).sum()).float()


def positive_weights(positives: list[int], images: int, method: str) -> torch.Tensor:
    """Multilabel: BCE's pos_weight per label, negatives / positives (inverse frequency; its
    square root for sqrt), or the effective-number weights of the positives over those of
    the negatives; 1 for a label with no positive or no negative."""
    pos = torch.tensor(positives, dtype=torch.float64)
    neg = images - pos
    if method in ("weights", "sqrt"):
        w = (neg / pos) ** (0.5 if method == "sqrt" else 1.0)
    else:
        def effective(k):
            return (1 - EFFECTIVE_BETA) / (1 - EFFECTIVE_BETA ** k)
        w = effective(pos) / effective(neg)
    defined = (pos > 0) & (neg > 0)
    return torch.where(defined, w, torch.ones_like(w)).float()


def sample_weights(labels: torch.Tensor) -> torch.Tensor:
    """Each training image's chance of being drawn, so that every class is drawn equally
    often: 1 / its class's count. Multi-hot rows take their rarest label's weight; rows with
    no label count as a class of their own."""
    if labels.ndim == 1:
        counts = torch.bincount(labels).double()
        return 1 / counts[labels]
    hot = labels > 0.5
    per_label = 1 / hot.sum(0).double().clamp_min(1)
    rarest = torch.where(hot, per_label, torch.zeros_like(per_label)).amax(1)
    empty = ~hot.any(1)
    return torch.where(empty, 1 / empty.sum().double().clamp_min(1), rarest)


def class_counts(labels: torch.Tensor, classes: int) -> list[int]:
    """Training images per class (multi-hot: positives per label)."""
    if labels.ndim == 2:
        return [int(c) for c in (labels > 0.5).sum(0).tolist()]
    return torch.bincount(labels, minlength=classes).tolist()
