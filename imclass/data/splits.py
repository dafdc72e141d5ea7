"""Seeded, stratified splits and subsets (scikit-learn), as index tensors."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from imclass.errors import DataError


def stratified_split(labels: torch.Tensor, held_out: float | int, seed: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (kept, held out), class proportions kept in both, the same for the same seed.

    `held_out` is a fraction in (0, 1) or a number of images. Multi-hot labels [N, K] are
    split by iterative stratification (each label's share kept; Sechidis et al. 2011).
    """
    if labels.ndim == 2:
        return _multilabel_split(labels, held_out, seed)
    index = np.arange(len(labels))
    counts = torch.bincount(labels)
    n_classes = int((counts > 0).sum())
    n_held = held_out if isinstance(held_out, int) else int(np.ceil(held_out * len(labels)))
    if int(counts[counts > 0].min()) < 2 or not n_classes <= n_held <= len(labels) - n_classes:
        raise DataError(f"cannot split {n_held} of {len(labels)} images off stratified by class "
                        f"(the smallest class has {int(counts[counts > 0].min())} image(s)); "
                        "use more images or a different --val-fraction / --subset")
    kept, held = train_test_split(index, test_size=n_held, stratify=labels.numpy(),
                                  random_state=seed)
    kept, held = _every_class_held(labels.numpy(), kept, held, seed)
    return torch.from_numpy(np.sort(kept)), torch.from_numpy(np.sort(held))


def _every_class_held(labels: np.ndarray, kept: np.ndarray, held: np.ndarray, seed: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Each class in the held-out part (validation, test) at least once. scikit-learn shares
    images out in proportion and rounds: a class of 4 images in a 10% split is owed 0.4 and
    gets none, so its recall could be neither watched nor measured. Such a class trades one
    of its images (seeded pick) for one of the class held most often; the sizes stay."""
    rng = np.random.default_rng(seed)
    kept, held = kept.copy(), held.copy()
    for c in np.unique(labels):
        if (labels[held] == c).any() or (labels[kept] == c).sum() < 2:
            continue
        held_counts = np.bincount(labels[held], minlength=labels.max() + 1)
        give = rng.choice(np.flatnonzero(labels[kept] == c))
        take = rng.choice(np.flatnonzero(labels[held] == held_counts.argmax()))
        kept[give], held[take] = held[take], kept[give]
    return kept, held


def stratified_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices of `n` images keeping the class proportions; all of them when n >= len."""
    if n >= len(labels):
        return torch.arange(len(labels))
    kept, _ = stratified_split(labels, len(labels) - n, seed)
    return kept


def _multilabel_split(labels: torch.Tensor, held_out: float | int, seed: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    n = len(labels)
    n_held = held_out if isinstance(held_out, int) else int(np.ceil(held_out * n))
    if not 1 <= n_held < n:
        raise DataError(f"cannot split {n_held} of {n} images off; use more images or a "
                        "different --val-fraction / --subset")
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=n_held, random_state=seed)
    kept, held = next(splitter.split(np.zeros(n), labels.numpy()))
    return torch.from_numpy(np.sort(kept)), torch.from_numpy(np.sort(held))
