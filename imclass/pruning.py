"""Pruning a trained model, then fine-tuning it (`imclass prune`).

Two ways, both by weight magnitude:
- unstructured (torch.nn.utils.prune): the given share of all convolution and linear weights,
  smallest |w| first across the whole network, set to zero. The shapes stay, so the model is
  no faster on dense kernels; the zeros compress and are a step towards sparse kernels.
  Fine-tuning keeps them zero (KeepZeros re-applies the mask after every optimiser step).
- structured (torch-pruning): the given share of the channels of every convolution (by the
  L2 norm of each group of coupled weights: a channel, its BatchNorm and the next layer's
  inputs) removed outright. Narrower layers: fewer FLOPs, a faster model, exported or not.
  The head's outputs are never pruned. A 0.5 share of channels leaves about a quarter of the
  parameters, since most weights join two pruned layers.

`Pruning` is the hook `imclass.train` calls on the model it built from the trained run's
weights: it prunes before the first fine-tuning epoch and says what it did. A pruned run
folder keeps its `prune.json`, so `--resume` prunes again (the same, magnitudes being fixed)
and continues.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from imclass.config import RunConfig, override
from imclass.console import Log
from imclass.data.batches import Batches
from imclass.errors import ConfigError
from imclass.models import count_parameters, flops_per_image
from imclass.models.resize import follow_head
from imclass.runfolder import load_run, model_data_config, write_json
from imclass.training import validate

SPEC_FILE = "prune.json"
PRUNABLE = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class PruneSpec:
    source: str         # the trained run folder pruned
    amount: float       # share of weights (unstructured) or of each layer's channels removed
    structured: bool

    def __post_init__(self):
        if not 0 < self.amount < 1:
            raise ConfigError(f"--amount {self.amount}: give the share to prune, between 0 "
                              "and 1 (0.5 prunes half)")

    @property
    def method(self) -> str:
        return "structured" if self.structured else "unstructured"

    def save(self, run_dir: Path) -> None:
        write_json(run_dir / SPEC_FILE, dataclasses.asdict(self))

    @classmethod
    def read(cls, run_dir: Path) -> "PruneSpec | None":
        path = Path(run_dir) / SPEC_FILE
        return cls(**json.loads(path.read_text())) if path.is_file() else None


def fine_tune_config(source: str | Path, epochs: int | None, lr: float | None) -> RunConfig:
    """The trained run's own config, set to start from its best weights and train them all
    for a few epochs (30% of its own, at least 3) at a tenth of its learning rate (its fine-tuning rate for a pretrained
    run): pruning removes little of what was learned, so a short, gentle run restores it."""
    run = load_run(source, device="cpu")
    cfg = run.config
    t = cfg.train
    runs = json.loads((Path(source) / "run.json").read_text()).get("epochs_run", t.epochs) \
        if (Path(source) / "run.json").is_file() else t.epochs
    # no weight average (a folder recipe's run keeps one): the mask re-zeroes the pruned
    # weights after each step, but an average updated before it would hold them non-zero
    values = {"weights": str(Path(source)), "pretrained": False, "recipe": "none",
              "freeze_epochs": 0, "fine_tune_lr": None, "ema": None,
              "epochs": epochs or min(runs, max(3, round(0.3 * runs))),
              "lr": lr or t.fine_tune_lr or t.lr / 10}
    tuned = override(cfg, values)
    return dataclasses.replace(tuned, data=model_data_config(tuned, run.meta))


def zero_smallest(model: nn.Module, amount: float) -> dict[str, torch.Tensor]:
    """Global magnitude pruning of every conv/linear weight; returns the masks by name."""
    from torch.nn.utils import prune

    model.to(memory_format=torch.contiguous_format)  # prune views weights as flat vectors
    layers = [(m, "weight") for m in model.modules() if isinstance(m, PRUNABLE)]
    prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=amount)
    masks = {}
    for name, module in model.named_modules():
        if isinstance(module, PRUNABLE):
            masks[f"{name}.weight"] = module.weight_mask.detach().clone()
            prune.remove(module, "weight")  # the zeros made permanent in `weight` itself
    return masks


def remove_channels(model: nn.Module, amount: float, input_shape: tuple[int, int, int]) -> None:
    """Structured pruning with torch-pruning: each layer loses `amount` of its channels."""
    import torch_pruning as tp

    was_training = model.training
    model.eval()  # tracing runs a forward pass: BatchNorm statistics must not see it
    example = torch.zeros(1, *input_shape, device=next(model.parameters()).device)
    pruner = tp.pruner.BasePruner(model, example, pruning_ratio=amount,
                                  importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  ignored_layers=[model.head])
    pruner.step()
    model.train(was_training)
    follow_head(model)


class KeepZeros:
    """A training-loop callback: after every optimiser step the pruned weights are zero
    again (momentum and weight decay would otherwise revive them)."""

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor]):
        self.model, self.masks = model, masks
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, event: str, info: dict):
        if event == "epoch_start":  # looked up again: moving the model makes new tensors
            params = dict(self.model.named_parameters())
            self.pairs = [(params[n], m.to(params[n].device)) for n, m in self.masks.items()]
        elif event == "batch_end":
            with torch.no_grad():
                for param, mask in self.pairs:
                    param.mul_(mask)
        return None


def sparsity(model: nn.Module) -> float:
    """Share of the conv/linear weights that are exactly zero."""
    weights = [m.weight for m in model.modules() if isinstance(m, PRUNABLE)]
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / max(1, total)


def size_of(model: nn.Module, input_shape: tuple[int, int, int]) -> dict:
    return {"parameters": count_parameters(model),
            "nonzero_parameters": sum(int(p.count_nonzero()) for p in model.parameters()),
            "flops_per_image": flops_per_image(model, input_shape),
            "sparsity": sparsity(model)}


CALIBRATION_IMAGES = 4096  # training images that re-estimate BatchNorm statistics


def recalibrate_norms(model: nn.Module, setup) -> None:
    """BatchNorm running statistics measured again on training images (no augmentation):
    pruning changes what every later layer sees, and the statistics of the unpruned model
    then misplace all its features (validation accuracy at chance after removing channels,
    until a whole epoch's updates have moved them back)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    splits, t = setup.splits, setup.cfg.train
    images = splits.train.take(torch.arange(min(len(splits.train), CALIBRATION_IMAGES)))
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over every calibration batch
    was_training = model.training
    model.train()
    with torch.no_grad():
        for x, _ in Batches(images, t.batch_size, splits.norm, device=setup.device,
                            size=splits.input_size):
            model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)


class Pruning:
    """`imclass.train`'s adapt_model hook: prune the model built from the trained run."""

    def __init__(self, spec: PruneSpec):
        self.spec = spec

    def __call__(self, model: nn.Module, setup, log: Log) -> tuple[nn.Module, dict, list]:
        splits = setup.splits
        shape = (splits.train.channels, splits.input_size, splits.input_size)
        before, val_before = size_of(model, shape), self.val_accuracy(model, setup)
        masks = None
        if self.spec.structured:
            remove_channels(model, self.spec.amount, shape)
        else:
            masks = zero_smallest(model, self.spec.amount)
        recalibrate_norms(model, setup)
        after, val_after = size_of(model, shape), self.val_accuracy(model, setup)
        record = {**dataclasses.asdict(self.spec), "method": self.spec.method,
                  "before": before | {"val_acc": val_before},
                  "after": after | {"val_acc": val_after}}
        log(f"pruned ({self.spec.method}, {self.spec.amount:g} of the "
            f"{'channels' if self.spec.structured else 'weights'}): parameters "
            f"{before['parameters']:,} -> {after['parameters']:,}, nonzero "
            f"{after['nonzero_parameters']:,}, {before['flops_per_image'] / 1e6:.1f} -> "
            f"{after['flops_per_image'] / 1e6:.1f} MFLOPs per image"
            + ("" if val_before is None else f"; validation accuracy {val_before:.4f} -> "
               f"{val_after:.4f} before fine-tuning"))
        callbacks = [KeepZeros(model, masks)] if masks is not None else []
        return model, {"pruned": record}, callbacks

    @staticmethod
    def val_accuracy(model: nn.Module, setup) -> float | None:
        """None for a run without validation (--val-fraction 0)."""
        splits, t = setup.splits, setup.cfg.train
        if not splits.validated:
            return None
        batches = Batches(splits.val, t.eval_batch_size, splits.norm, device=setup.device,
                          size=splits.input_size)
        loss = setup.task.loss(t.loss, t.label_smoothing)
        return validate(model, batches, loss, setup.device, setup.task.hits)["acc"]
