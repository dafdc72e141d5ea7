"""Each BatchNorm that runs on its running statistics folded into the convolution before it,
at every call, in training too.

A BatchNorm in eval mode is a fixed per-channel scale and shift, yet eager PyTorch runs it as
a pass of its own over the activations, and its backward pass as two more (the input's
gradient, the scale's and shift's sums). The transfer recipe trains with every BatchNorm below
the head in eval mode (`--freeze-bn`), validation and evaluation run all of them so: folded,
the convolution computes `conv(x, w * s, b')` with `s = gamma / sqrt(var + eps)` and
`b' = beta - mean * s` from the same parameters, so gradients reach w, gamma and beta as
before, the same numbers to float rounding (tests/test_folding.py), and the state dict keeps
its keys. tf_EfficientNet-Lite0, batch 32, fp32, channels-last, 2-core Xeon (2026-12-06,
bench/folding.py): a training step with frozen BatchNorms 1,086 -> 928 ms at 224 px and
570 -> 494 ms at 160 px; an eval forward 271 -> 208 ms at 224 px (docs/benchmarks.md,
"BatchNorm folded").

A pair is folded only where a BatchNorm's input is the very tensor its convolution returned
(seen by hooks on one forward pass), and the whole model must then give the unfolded model's
outputs with scrambled statistics; otherwise nothing is folded. A BatchNorm in training mode
(a model trained from scratch) runs as always. Convolutions with a forward of their own
other than timm's Conv2dSame, and BatchNorm subclasses other than timm's BatchNormAct2d
(a synchronised BatchNorm of a distributed run among them), are left alone.
"""

from __future__ import annotations

import copy
import sys

import torch
import torch.nn.functional as F
from torch import nn

from imclass.models import depthwise


def _timm_layers():
    """timm's layers where timm is already imported (a timm model is), else None: importing
    it here would add 1.5 s to every run of our own CNNs."""
    return sys.modules.get("timm.layers")


def _norm_classes() -> tuple[type, ...]:
    timm_layers = _timm_layers()
    return (nn.BatchNorm2d,) + ((timm_layers.BatchNormAct2d,) if timm_layers else ())


def _conv_classes() -> tuple[type, ...]:
    timm_layers = _timm_layers()
    return (nn.Conv2d,) + ((timm_layers.Conv2dSame,) if timm_layers else ())


def _uses_statistics(norm: nn.Module) -> bool:
    return not norm.training and norm.running_mean is not None


class _FoldedConv:
    """Mixed into a convolution's class: while its BatchNorm uses running statistics, one
    convolution with the folded weights and bias."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self._imclass_norm
        if not _uses_statistics(norm):
            return super().forward(x)
        scale = torch.rsqrt(norm.running_var + norm.eps)
        bias = -norm.running_mean * scale
        if norm.affine:
            scale = scale * norm.weight
            bias = bias * norm.weight + norm.bias
        if self.bias is not None:
            bias = bias + self.bias * scale
        weight = self.weight * scale.reshape(-1, 1, 1, 1)
        if self._imclass_same:  # timm's Conv2dSame: TensorFlow's "same" padding first
            from timm.layers.padding import pad_same
            x = pad_same(x, weight.shape[-2:], self.stride, self.dilation)
            return depthwise.conv2d(x, weight, bias, self.stride, 0, self.dilation, self.groups)
        if self.padding_mode != "zeros":
            return self._conv_forward(x, weight, bias)
        return depthwise.conv2d(x, weight, bias, self.stride, self.padding, self.dilation,
                                self.groups)


class _FoldedNorm:
    """Mixed into a BatchNorm's class: while it uses running statistics its convolution has
    applied it, so only what follows it in the same module (BatchNormAct2d's dropout and
    activation) is left."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _uses_statistics(self):
            return super().forward(x)
        if hasattr(self, "act"):
            return self.act(self.drop(x))
        return x


_CLASSES: dict[tuple[type, type], type] = {}


def _folded_class(mixin: type, base: type) -> type:
    if (mixin, base) not in _CLASSES:
        _CLASSES[mixin, base] = type(base.__name__, (mixin, base), {})
    return _CLASSES[mixin, base]


def _pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[nn.Module, nn.Module]]:
    """(convolution, BatchNorm) where the BatchNorm's input was the convolution's output."""
    convs = [m for m in model.modules() if type(m) in _conv_classes()]
    norms = [m for m in model.modules() if type(m) in _norm_classes()
             and m.num_features > 0 and m.track_running_stats]
    # each output kept alive through the pass, so that no later tensor can take its id
    made_by: dict[int, tuple[nn.Module, torch.Tensor]] = {}
    pairs: list[tuple[nn.Module, nn.Module]] = []

    def read(norm, args):
        conv, out = made_by.get(id(args[0]), (None, None))
        if out is args[0]:
            pairs.append((conv, norm))
    hooks = [c.register_forward_hook(lambda mod, _, out: made_by.__setitem__(id(out), (mod, out)))
             for c in convs]
    hooks += [n.register_forward_pre_hook(read) for n in norms]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    uses = {}
    for conv, norm in pairs:  # a convolution read by two norms, or a norm reached twice: leave
        uses[id(conv)] = uses.get(id(conv), 0) + 1
        uses[id(norm)] = uses.get(id(norm), 0) + 1
    return [(c, n) for c, n in pairs if uses[id(c)] == 1 and uses[id(n)] == 1]


def _install(pairs: list[tuple[nn.Module, nn.Module]]) -> None:
    for conv, norm in pairs:
        object.__setattr__(conv, "_imclass_norm", norm)  # not a child: the keys stay
        object.__setattr__(conv, "_imclass_same", type(conv) is not nn.Conv2d)
        conv.__class__ = _folded_class(_FoldedConv, type(conv))
        norm.__class__ = _folded_class(_FoldedNorm, type(norm))


def _uninstall(pairs: list[tuple[nn.Module, nn.Module]]) -> None:
    for conv, norm in pairs:
        conv.__class__ = conv.__class__.__mro__[2]
        norm.__class__ = norm.__class__.__mro__[2]


def _scramble_statistics(model: nn.Module) -> None:
    """Running statistics and affine parameters far from the identity a fresh BatchNorm has,
    so that a wrongly folded pair cannot give the right numbers by chance."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None:
                for t, low in ((m.running_mean, -1.0), (m.running_var, 0.5)):
                    t.copy_(torch.rand(t.shape, generator=g) * 1.5 + low)
                if m.affine:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)


def _agrees(model: nn.Module, example: torch.Tensor) -> bool:
    """The folded model and an unfolded copy give the same outputs, statistics scrambled."""
    trial = copy.deepcopy(model).eval()
    _scramble_statistics(trial)
    pairs = [(m, m._imclass_norm) for m in trial.modules() if isinstance(m, _FoldedConv)]
    with torch.no_grad():
        folded = trial(example)
        _uninstall(pairs)
        plain = trial(example)
    return torch.allclose(folded.float(), plain.float(), rtol=1e-3, atol=1e-4)


def fold_norms(model: nn.Module, example: torch.Tensor) -> int:
    """Fold `model`'s BatchNorms into their convolutions whenever they use running statistics
    (see the module's docstring); `example` is an input batch of the model's shape on its
    device. Returns the number of pairs folded (0: the model is as it was)."""
    pairs = _pairs(model, example)
    if not pairs:
        return 0
    _install(pairs)
    try:
        agree = _agrees(model, example)
    except Exception:  # noqa: BLE001 - a model that cannot run folded runs as it was
        agree = False
    if not agree:
        _uninstall(pairs)
        return 0
    return len(pairs)
