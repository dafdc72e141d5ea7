"""A trained model made fast for one pass over many images on a CPU (the test pass).

In eval mode a BatchNorm is a fixed per-channel scale and shift, yet eager PyTorch runs it as
its own pass over every activation: on EfficientNet-Lite0 at 224 px (2 cores, fp32,
channels-last) the batch norms took 37% of the test pass's time against 63% for the
convolutions (cProfile, 2026-12-06). Traced and frozen (`torch.jit.freeze`), each one is folded
into the convolution before it and the module calls' Python overhead goes too; see
docs/benchmarks.md, "`imclass evaluate` on a photo run", for what it saves. A model the tracer
cannot follow, or a GPU (whose evaluation runs under autocast), keeps the eager model.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


class Frozen:
    """The eval-mode `model`'s forward_with_embedding, traced and frozen: forward(x) ->
    logits, forward_with_embedding(x) -> (logits, features), as the eager model has them."""

    def __init__(self, traced: torch.jit.ScriptModule):
        self.traced = traced

    def eval(self) -> "Frozen":
        return self  # frozen in eval mode already

    def forward_with_embedding(self, x: torch.Tensor):
        return self.traced(x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.traced(x)[0]


class _WithEmbedding(nn.Module):
    """forward_with_embedding as a module's forward, for the tracer."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return self.model.forward_with_embedding(x)


# Images a pass must have for freezing to pay: tracing and checking cost about eight images'
# forward passes, freezing saves about a third of each image's.
MIN_IMAGES = 64


def for_inference(model: nn.Module, example: torch.Tensor, images: int):
    """`model` frozen for a pass over `images` images like `example` (3 or more real images,
    normalised, on the model's device), or `model` itself where that is not possible, would
    not pay, or would not agree with it: traced on two images, the frozen model must give the
    eager model's logits and features for all of `example`, another batch size."""
    if (example.device.type != "cpu" or len(example) < 3 or images < MIN_IMAGES
            or not hasattr(model, "forward_with_embedding")):
        return model
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on Python values
            traced = torch.jit.trace(_WithEmbedding(model).eval(), example[:2],
                                     check_trace=False)
            frozen = Frozen(torch.jit.freeze(traced))
            agree = all(torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-3) for a, b in
                        zip(frozen.forward_with_embedding(example),
                            model.forward_with_embedding(example)))
    except Exception:  # noqa: BLE001 - any tracer failure means: score with the eager model
        agree = False
    model.train(was_training)
    return frozen if agree else model
