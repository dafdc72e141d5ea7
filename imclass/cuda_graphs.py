"""The training step's forward and backward passes recorded once as CUDA graphs, then replayed.

On a GPU a small model's step is bound by kernel launches, not arithmetic: our default CNN's
step is about 12 microseconds of an H200's arithmetic but 233 launches, each a few
microseconds of host time (../shared/measurements/gpu-h200-2026-12-04.md). A CUDA graph
replays a recorded sequence of kernels with one launch. torch.cuda.make_graphed_callables
records the model's forward and its backward (as an autograd function, so the loss and the
optimiser outside it are unchanged) on the first training batch of a stage, and replays them
for every batch of that shape; another shape (a last, smaller batch), evaluation mode and
everything after the backward run as before.

The optimiser stays outside the graph: torch's SGD reads a tensor learning rate back to the
host (torch.optim.sgd: `_to_scalar(lr)`), so it cannot be recorded under a schedule that
changes the rate (and OneCycle's momentum) every step. On CUDA it is torch's fused kernel
instead (imclass.training.make_optimizer): one launch, as is the weight average's update.
"""

from __future__ import annotations

import torch
from torch import nn

from imclass.config import OWN_MODELS


def decide(setting: str, device: torch.device, model_name: str, distributed: bool,
           compile: bool) -> tuple[bool, str]:
    """(use graphs, why) for --cuda-graphs auto/on/off. `on` where they cannot work is skipped
    (a resumed run may continue on a machine without a GPU), the reason said; `auto` takes
    them on CUDA for our own CNNs (small, launch-bound steps), not for a large timm model,
    whose step the arithmetic bounds."""
    refusal = (f"CUDA graphs need a CUDA device; this run trains on {device.type}"
               if device.type != "cuda" else
               "CUDA graphs are not used with several processes (DDP's hooks run on the host "
               "between kernels)" if distributed else
               "CUDA graphs are not used with --compile true (torch.compile's "
               "mode=reduce-overhead records its own)" if compile else None)
    if setting == "off":
        return False, "--cuda-graphs off"
    if refusal is not None:
        return False, refusal
    if setting == "auto" and model_name not in OWN_MODELS:
        return False, (f"{model_name}: a large model's step is bound by arithmetic, not by "
                       "launches (--cuda-graphs on records it anyway)")
    return True, "forward and backward recorded once, replayed every step"


class GraphedForward(nn.Module):
    """`module`, whose training forward (and its backward) is recorded as CUDA graphs at the
    first training call and replayed for every later batch of that shape. `record` is
    torch.cuda.make_graphed_callables (a test hands in another)."""

    def __init__(self, module: nn.Module, record=None):
        super().__init__()
        self.module = module
        self.record = record or torch.cuda.make_graphed_callables
        self.graphed = None
        self.shape: torch.Size | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.module(x)
        if self.graphed is None:
            self.shape = x.shape
            # a wrapper is recorded, not `module` itself: make_graphed_callables replaces the
            # forward of what it is given, and `module` must still run other shapes eagerly
            self.graphed = self.record(_Calls(self.module), (x.detach(),))
        return self.graphed(x) if x.shape == self.shape else self.module(x)


class _Calls(nn.Module):
    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)
