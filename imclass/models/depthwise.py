"""A depthwise convolution's backward pass in the pieces oneDNN computes fast.

EfficientNet-Lite0's 5x5 depthwise convolutions (one filter per channel) cost a fine-tuning
step on a CPU far more than their arithmetic: oneDNN's weight gradient for them runs 10-30x
slower than their forward pass, and asked for both gradients at once it computes the input's
gradient slowly too. On a 2-core Xeon with AMX (2026-12-07, batch 32, channels-last, fp32):
1152 channels at 3x3 px, forward 0.15 ms, both gradients at once 6-7.5 ms; the input's alone
0.2 ms, the weights' alone 4.8 ms, the weights' as four 3x3 weight gradients over shifted
windows 2.6 ms (oneDNN's 3x3 kernel is a fast one).

So `conv2d` runs a stride-1 depthwise filter larger than 3x3 forward as usual and backward
its own way: the input's gradient by a call of its own, the weights' as the 3x3 tiles of a
filter padded to a multiple of 3 (a 5x5 one as the four tiles of a 6x6 one, whose sixth row
and column fall outside the padded input and come out zero, then are cut off). Each 5x5 layer
of Lite0 at 96 and 192 px, forward and backward: 1.1-1.7x faster at stride 1; at stride 2
the split lost or tied (0.9-1.0x), so those keep autograd's. A fine-tuning step of the
transfer recipe: 186 -> 173 ms at 96 px, 555 -> 537 ms at 192 (bench/depthwise.py, medians of
5 alternating rounds; docs/benchmarks.md). The numbers
are the same to float rounding (tests/test_depthwise.py). Every other convolution, and every
one without gradients (evaluation, export, traces) or under autocast, is plain `F.conv2d`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TILE = 3  # px: the filter side oneDNN's depthwise weight gradient is fast for


def _wanted(x: torch.Tensor, weight: torch.Tensor, groups: int) -> bool:
    """A depthwise filter larger than TILE that autograd will differentiate on a CPU in fp32:
    not under autocast (bf16), not in a trace (checked first: a traced shape is not a number
    to compare), not on a GPU (measured on CPUs only)."""
    if (not torch.is_grad_enabled() or torch.jit.is_tracing() or torch.jit.is_scripting()
            or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()
            or x.device.type != "cpu" or torch.is_autocast_enabled("cpu")):
        return False
    return (groups > 1 and weight.shape[0] == groups == x.shape[1] and weight.shape[1] == 1
            and weight.shape[-1] > TILE and weight.shape[-1] == weight.shape[-2]
            and (x.requires_grad or weight.requires_grad))


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
           stride, padding, dilation, groups: int) -> torch.Tensor:
    """F.conv2d, with the backward pass above for a differentiated depthwise filter."""
    pairs = [tuple(v) if isinstance(v, (tuple, list)) else (v, v)
             for v in (stride, padding, dilation)]
    if (isinstance(padding, str) or pairs[0] != (1, 1) or pairs[2] != (1, 1)
            or not _wanted(x, weight, groups)):
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    return _Depthwise.apply(x, weight, bias, pairs[1])


class _Depthwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return F.conv2d(x, weight, bias, 1, padding, 1, weight.shape[0])

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous(memory_format=_layout(x))
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _backward(grad, x, weight, (1, 1), ctx.padding, (True, False))
        if ctx.needs_input_grad[1]:
            grad_w = _tiled_weight_grad(grad, x, weight.shape[-1], ctx.padding)
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


def _layout(x: torch.Tensor) -> torch.memory_format:
    return (torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
            and not x.is_contiguous() else torch.contiguous_format)


def _backward(grad, x, weight, stride, padding, which: tuple[bool, bool]) -> torch.Tensor:
    """One of oneDNN's two gradients (input, weights) of a depthwise convolution."""
    grads = torch.ops.aten.convolution_backward(
        grad, x, weight, None, list(stride), list(padding), [1, 1], False, [0, 0],
        weight.shape[0], [*which, False])
    return grads[0] if which[0] else grads[1]


def _tiled_weight_grad(grad: torch.Tensor, x: torch.Tensor, side: int,
                       padding: tuple[int, int]) -> torch.Tensor:
    """The weight gradient of a stride-1 depthwise `side` x `side` filter, from the 3x3
    gradients of the tiles of a filter padded up to a multiple of 3."""
    tiles = -(-side // TILE)
    span = tiles * TILE
    (ph, pw), (h, w) = padding, grad.shape[-2:]
    # the zero-padded input every tile's window fits in: rows h - 1 + span (>= ph + the
    # input's rows, as span >= side), columns likewise
    n, channels, rows, cols = x.shape
    xp = torch.empty((n, channels, h - 1 + span, w - 1 + span), dtype=x.dtype,
                     device=x.device, memory_format=_layout(x)).zero_()
    xp[..., ph:ph + rows, pw:pw + cols] = x
    tile_weight = x.new_empty(channels, 1, TILE, TILE)  # only its shape matters to oneDNN
    out = x.new_empty(channels, 1, span, span)
    for i in range(0, span, TILE):
        for j in range(0, span, TILE):
            window = xp[..., i:i + h - 1 + TILE, j:j + w - 1 + TILE]
            out[..., i:i + TILE, j:j + TILE] = _backward(
                grad, window, tile_weight, (1, 1), (0, 0), (False, True))
    return out[..., :side, :side]
