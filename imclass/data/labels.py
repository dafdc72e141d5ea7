"""Label strings to a task and to tensors; the class tree of hierarchical (path) labels."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from imclass.errors import DataError

TASK_NAMES = ("multiclass", "binary", "multilabel", "hierarchical")


def infer_task(label_sets: Sequence[tuple[str, ...]], hierarchy_sep: str, requested: str = "auto",
               multi_hot: bool = False) -> str:
    """The task the labels call for (several per image: multilabel; path labels:
    hierarchical; two classes: binary; else multiclass), or `requested` when it fits them."""
    several = multi_hot or any(len(s) > 1 for s in label_sets)
    classes = {label for s in label_sets for label in s}
    if requested == "auto":
        if several:
            return "multilabel"
        if any(hierarchy_sep in c for c in classes):
            return "hierarchical"
        return "binary" if len(classes) == 2 else "multiclass"
    if several and requested != "multilabel":
        raise DataError(f"some images carry several labels, which --task {requested} cannot "
                        "learn; use --task multilabel (or auto)")
    if requested == "binary" and len(classes) != 2:
        raise DataError(f"--task binary needs exactly two classes; the labels hold "
                        f"{len(classes)}: {', '.join(sorted(classes)[:10])}")
    return requested


def class_names_of(label_sets: Sequence[tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(sorted({label for s in label_sets for label in s}))


def encode(label_sets: Sequence[tuple[str, ...]], task: str, class_names: Sequence[str]
           ) -> torch.Tensor:
    """int64 [N] class indices, or for multilabel float32 [N, K] multi-hot rows."""
    import torch  # here: `imclass predict` reads the hierarchy helpers below without torch

    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({label for s in label_sets for label in s if label not in index})
    if unknown:
        raise DataError(f"labels {', '.join(unknown[:5])} are not among the training classes")
    if task == "multilabel":
        hot = np.zeros((len(label_sets), len(class_names)), dtype=np.float32)
        for row, labels in enumerate(label_sets):
            hot[row, [index[label] for label in labels]] = 1
        return torch.from_numpy(hot)
    return torch.tensor([index[s[0]] for s in label_sets], dtype=torch.long)


def ancestors(name: str, sep: str) -> list[str]:
    """'a/b/c' -> ['a', 'a/b', 'a/b/c']: the node and every node above it, top first."""
    parts = name.split(sep)
    return [sep.join(parts[:d]) for d in range(1, len(parts) + 1)]


def depth(class_names: Sequence[str], sep: str) -> int:
    return max(len(name.split(sep)) for name in class_names)


def at_level(class_names: Sequence[str], level: int, sep: str) -> list[str]:
    """Each leaf's node at `level` (1 = top); a leaf shallower than that is its own node."""
    return [sep.join(name.split(sep)[:level]) for name in class_names]


def node_probabilities(probs: np.ndarray, class_names: Sequence[str], sep: str
                       ) -> dict[str, np.ndarray]:
    """Probability of every node of the tree: the sum over the leaves beneath it, so a
    parent is never less likely than any of its children."""
    out: dict[str, np.ndarray] = {}
    for k, name in enumerate(class_names):
        for node in ancestors(name, sep):
            out[node] = out.get(node, 0) + probs[:, k]
    return out
