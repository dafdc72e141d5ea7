"""Freeze, then unfreeze: the stages of a fine-tuning run and the learning rate of each layer
group.

A model's parameters fall into layer groups from the input to the output (timm's own coarse
groups for timm networks: stem, each stage of blocks, the last convolutions; the stages
between poolings for our CNN), with the head always a group of its own, last.
With `--freeze-epochs N` the run has two stages: N epochs training the head alone (every
other parameter frozen and the BatchNorm layers outside the head kept in eval mode, so their
running statistics do not move either), then the rest at `--fine-tune-lr` with the groups
chosen by `--unfreeze`. Each group below the head trains at `--lr-mult` times the rate of the
group above it (discriminative learning rates). `--freeze-bn` keeps every BatchNorm layer in
inference mode throughout (their scale and shift still learn): on a small dataset, batch
statistics of a few dozen images replacing the pretrained ones shift every feature the head
has just learned (Keras' fine-tuning guide gives the same advice).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from imclass.config import TrainConfig

NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
# An epoch with the backbone frozen costs about this share of a fine-tuning epoch: a forward
# pass through the backbone and no backward (EfficientNet-Lite0 at 192 px on two cores: 2.6
# against 6.5-7.2 s for 300 photos, 2026-12-07). A prior only: what the run measures wins.
FROZEN_EPOCH_COST = 0.4


@dataclass
class Stage:
    name: str
    number: int
    epochs: int
    groups: list[tuple[list[nn.Parameter], float]]  # (parameters, peak lr), head first
    all_norms_frozen: bool = False  # --freeze-bn: running statistics never move
    cached: bool = False  # the head trains on cached backbone features (imclass.features)


def _head(model: nn.Module) -> nn.Module:
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        raise ValueError(f"{type(model).__name__} has no `head` module to train alone")
    return head


def layer_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """Parameter groups from input to output; the head's parameters last."""
    head = {id(p) for p in _head(model).parameters()}
    backbone = getattr(model, "backbone", None)
    if backbone is not None and hasattr(backbone, "group_matcher"):
        from timm.models import group_parameters
        named = dict(backbone.named_parameters())
        grouped = group_parameters(backbone, backbone.group_matcher(coarse=True))
        groups = [[named[n] for n in names] for _, names in sorted(grouped.items())]
    elif isinstance(getattr(model, "features", None), nn.Sequential):
        groups, current = [], []
        for module in model.features:
            if isinstance(module, nn.MaxPool2d) and current:
                groups.append(current)
                current = []
            current += list(module.parameters())
        groups.append(current)
    else:
        groups = [list(model.parameters())]
    groups = [[p for p in g if id(p) not in head] for g in groups]
    return [g for g in groups if g] + [list(_head(model).parameters())]


def _rates(groups: list[list[nn.Parameter]], top_lr: float, mult: float):
    """(group, lr) from the head down: the head at top_lr, each group below times `mult`."""
    return [(g, top_lr * mult ** depth) for depth, g in enumerate(reversed(groups))]


def plan_stages(model: nn.Module, cfg: TrainConfig) -> list[Stage]:
    if not cfg.freeze_epochs and cfg.lr_mult == 1:  # the plain case: one group, any model
        return [Stage("train", 1, cfg.epochs, [(list(model.parameters()), cfg.lr)],
                      cfg.freeze_bn)]
    groups = layer_groups(model)
    if not cfg.freeze_epochs:
        return [Stage("train", 1, cfg.epochs, _rates(groups, cfg.lr, cfg.lr_mult),
                      cfg.freeze_bn)]
    keep = len(groups) - 1 if cfg.unfreeze == "all" else int(cfg.unfreeze.split("-")[1])
    unfrozen = groups[-1 - keep:] if keep else groups[-1:]
    fine_lr = cfg.fine_tune_lr if cfg.fine_tune_lr is not None else cfg.lr / 10
    cached = cfg.feature_views > 0
    head_name = (f"head on cached features ({cfg.feature_views} views)" if cached
                 else "head only (backbone frozen)")
    return [Stage(head_name, 1, cfg.freeze_epochs, [(groups[-1], cfg.lr)], cached=cached),
            Stage(f"fine-tune ({'all' if cfg.unfreeze == 'all' else cfg.unfreeze} unfrozen)",
                  2, cfg.epochs - cfg.freeze_epochs, _rates(unfrozen, fine_lr, cfg.lr_mult),
                  cfg.freeze_bn)]


def apply_stage(model: nn.Module, stage: Stage) -> None:
    """Only the stage's parameters get gradients; a norm layer none of whose parameters
    train (every one outside the head with --freeze-bn) is marked to stay in eval mode
    (see `train_mode`)."""
    trainable = {id(p) for g, _ in stage.groups for p in g}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    head = set(map(id, _head(model).modules())) if hasattr(model, "head") else set()
    for m in model.modules():
        if isinstance(m, NORM_TYPES):
            params = list(m.parameters(recurse=False))
            idle = bool(params) and not any(p.requires_grad for p in params)
            m._imclass_frozen = idle or (stage.all_norms_frozen and id(m) not in head)


def train_mode(model: nn.Module) -> None:
    """model.train(), except the frozen norm layers: their running statistics stay put."""
    model.train()
    for m in model.modules():
        if getattr(m, "_imclass_frozen", False):
            m.eval()
