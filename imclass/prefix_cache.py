"""Validation that does not recompute the frozen layers: while the lower layers of a network
are frozen (their weights and BatchNorm statistics fixed for the whole stage), their output
for a validation image cannot change, so it is computed at the stage's first validation and
kept; every later validation runs only the layers above.

The transfer recipe validates after every epoch and keeps the stem and the lowest blocks
frozen throughout. On EfficientNet-Lite0 (60 images at 224 px, BatchNorms folded, 2-core AVX2
EPYC, 2026-12-07, bench/validation_reuse.py) a validation of the frozen stage drops from 558
to 3 ms (only the head is left to run) and one of the top-5 fine-tuning from 601 to 395 ms
(the stem and blocks 0-1 kept): 42-54% of a run's validation time. The results are the same
numbers: the same layers on the same batches (tests/test_prefix_cache.py).

A network takes this path when its backbone's `forward_features` is its children applied in
turn (timm's EfficientNets and ResNets among others), which is checked by running both on two
images: a network that is not such a chain validates in full, as before. The kept activations
are bounded by PREFIX_BYTES; batches beyond it run the frozen layers each time.
"""

from __future__ import annotations

import torch
from torch import nn

from imclass.devices import autocast

PREFIX_BYTES = 256 * 1024 ** 2  # the most kept activations may hold (bytes, on the device)
HEAD_NAMES = {"global_pool", "head_drop", "classifier", "fc", "head", "pre_logits"}


def layer_chain(model: nn.Module, example: torch.Tensor) -> list[nn.Module] | None:
    """The modules whose composition is `model.backbone.forward_features`, input first: the
    backbone's children before its head, each sequential container opened one level (stages
    of blocks). None unless they give forward_features' output exactly on `example`."""
    backbone = getattr(model, "backbone", None)
    if backbone is None or not hasattr(backbone, "forward_features"):
        return None
    chain: list[nn.Module] = []
    for name, child in backbone.named_children():
        if name in HEAD_NAMES:
            break
        chain += list(child) if isinstance(child, nn.Sequential) else [child]
    modes = [(m, m.training) for m in model.modules()]  # frozen norms stay in eval mode
    model.eval()
    try:
        with torch.no_grad():
            expected, x = backbone.forward_features(example), example
            for module in chain:
                x = module(x)
    except Exception:  # noqa: BLE001 - a child that is not a plain layer: not a chain
        return None
    finally:
        for m, training in modes:
            m.training = training
    return chain if x.shape == expected.shape and torch.equal(x, expected) else None


def frozen_length(chain: list[nn.Module]) -> int:
    """How many of the chain's first modules cannot change while the stage trains: no
    parameter gets gradients and every BatchNorm keeps its statistics (imclass.finetune)."""
    def fixed(module: nn.Module) -> bool:
        if any(p.requires_grad for p in module.parameters()):
            return False
        return all(getattr(m, "_imclass_frozen", False) or getattr(m, "running_mean", None)
                   is None for m in module.modules() if hasattr(m, "running_mean"))
    k = 0
    while k < len(chain) and fixed(chain[k]):
        k += 1
    return k


class Above(nn.Module):
    """The evaluated model from the chain's module `start` on: it reads the activations the
    frozen modules below returned, and answers what the whole model would."""

    def __init__(self, model: nn.Module, chain: list[nn.Module], start: int):
        super().__init__()
        self.model = model  # a submodule, so that validate's .eval() reaches every layer
        self.rest = chain[start:]
        self.backbone = model.backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.rest:
            x = module(x)
        return self.backbone.forward_head(x)


class FrozenActivations:
    """(activations after the frozen modules, labels) for each validation batch: kept from the
    first pass up to PREFIX_BYTES, the rest computed again on each pass."""

    def __init__(self, below: list[nn.Module], batches, device: torch.device,
                 precision: str | None, limit: int = PREFIX_BYTES):
        self.below, self.batches = below, batches
        self.device, self.precision, self.limit = device, precision, limit
        self.kept: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.full = False  # the first pass is over: nothing more will be kept

    def __len__(self) -> int:
        return len(self.batches)

    @torch.no_grad()
    def _below(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.precision):
            for module in self.below:
                x = module(x)
        return x

    def __iter__(self):
        yield from self.kept
        self.batches.skip = len(self.kept)
        held = sum(a.numel() * a.element_size() for a, _ in self.kept)
        for x, y in self.batches:
            a = self._below(x)
            held += a.numel() * a.element_size()
            if not self.full and held <= self.limit:
                self.kept.append((a, y))
            yield a, y
        self.full = True


def validation_chains(model: nn.Module, evaluated: nn.Module, val_batches):
    """(the trained model's layer chain, the evaluated model's) for `frozen_validation`, from
    two validation images; None where either is not a chain or there is no validation."""
    if val_batches is None or not len(val_batches):
        return None
    example = next(iter(val_batches))[0][:2]
    trained = layer_chain(model, example)
    if trained is None:
        return None
    shown = trained if evaluated is model else layer_chain(evaluated, example)
    return None if shown is None or len(shown) != len(trained) else (trained, shown)


def frozen_validation(evaluated: nn.Module, chains, val_batches, device: torch.device,
                      precision: str | None):
    """(model, batches) for validating this stage: the layers above the frozen ones over their
    kept activations; (evaluated, val_batches) unchanged where nothing below is frozen.
    `chains`: (the trained model's chain, whose parameters say what is frozen; the evaluated
    model's, the same layers or their moving average) from `layer_chain`, or None."""
    if chains is None or val_batches is None:
        return evaluated, val_batches
    trained, shown = chains
    k = frozen_length(trained)
    if k == 0:
        return evaluated, val_batches
    return (Above(evaluated, shown, k),
            FrozenActivations(shown[:k], val_batches, device, precision))
