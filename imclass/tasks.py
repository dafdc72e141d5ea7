"""What differs between kinds of classification: head size, loss, logits to probabilities.

Only multiclass exists so far; binary, multilabel and hierarchical tasks join the registry
with their own losses and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from imclass.errors import ConfigError

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _mse_one_hot(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between softmax probabilities and one-hot targets (the textbook form)."""
    one_hot = F.one_hot(target, logits.shape[1]).to(logits.dtype)
    return F.mse_loss(logits.softmax(dim=1), one_hot)


@dataclass(frozen=True)
class Multiclass:
    name: str = "multiclass"

    def num_outputs(self, num_classes: int) -> int:
        return num_classes

    def loss(self, name: str, label_smoothing: float = 0.0) -> Loss:
        losses: dict[str, Loss] = {
            "cross-entropy": lambda z, y: F.cross_entropy(z, y, label_smoothing=label_smoothing),
            "mse": _mse_one_hot,
        }
        if name not in losses:
            raise ConfigError(f"unknown loss '{name}' for {self.name}; valid: "
                              f"{', '.join(losses)}")
        return losses[name]

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().softmax(dim=1)

    def predictions(self, probabilities: torch.Tensor) -> torch.Tensor:
        return probabilities.argmax(dim=1)


TASKS = {"multiclass": Multiclass()}


def get_task(name: str):
    if name not in TASKS:
        raise ConfigError(f"unknown task '{name}'; valid: {', '.join(TASKS)}")
    return TASKS[name]
