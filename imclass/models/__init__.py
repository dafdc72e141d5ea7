"""The model registry: a name maps to a constructor taking (config, input channels, outputs).

Our own presets register here; any other name that timm knows is built by `models.zoo`.
`build_model` is the only entry point.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from imclass.config import ModelConfig
from imclass.errors import ConfigError

Constructor = Callable[[ModelConfig, int, int], nn.Module]
MODELS: dict[str, Constructor] = {}


def register(name: str) -> Callable[[Constructor], Constructor]:
    def add(fn: Constructor) -> Constructor:
        MODELS[name] = fn
        return fn
    return add


def check_model_name(name: str) -> None:
    from imclass.models import zoo
    if name not in MODELS and not zoo.is_timm_model(name):
        raise zoo.unknown_model_error(name, MODELS)


def build_model(cfg: ModelConfig, in_channels: int, num_outputs: int,
                architecture: str | None = None) -> nn.Module:
    """The model with fresh weights; `architecture` overrides the timm network built for
    `cfg.name` (offline EfficientNet-Lite0 weights need tf_efficientnet_lite0)."""
    if cfg.name in MODELS:
        return MODELS[cfg.name](cfg, in_channels, num_outputs)
    check_model_name(cfg.name)
    from imclass.models.zoo import build_timm
    return build_timm(cfg, in_channels, num_outputs, architecture)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_image(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Forward FLOPs for one image (a multiply-add counts 2), by torch's own FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_shape, device=device))
    model.train(was_training)
    return counter.get_total_flops()


from imclass.models import cnn  # noqa: E402,F401  (fills the registry)
