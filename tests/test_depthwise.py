"""The depthwise convolution's own backward pass (imclass.models.depthwise): the gradients
F.conv2d's autograd gives, to float rounding, on every path it takes."""

import pytest
import torch
import torch.nn.functional as F

from imclass.models.depthwise import conv2d


def gradients(conv, x, weight, bias, padding, grad_out):
    out = conv(x, weight, bias, 1, padding, 1, weight.shape[0])
    wanted = [t for t in (x, weight, bias) if t is not None and t.requires_grad]
    return out, torch.autograd.grad(out, wanted, grad_out)


# (filter side, input side, padding): "same" padding as Lite0's, and none or more than half
@pytest.mark.parametrize("side,size,padding", [
    (5, 3, 2), (5, 6, 2), (5, 12, 2), (5, 7, 2), (7, 9, 3), (5, 8, 0), (5, 6, 3)])
@pytest.mark.parametrize("channels_last", [True, False])
def test_gradients_match_autograd_of_conv2d(side, size, padding, channels_last):
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(4, 6, size, size).contiguous(memory_format=fmt).requires_grad_()
    weight = torch.randn(6, 1, side, side, requires_grad=True)
    bias = torch.randn(6, requires_grad=True)
    grad_out = torch.randn_like(F.conv2d(x, weight, bias, 1, padding, 1, 6))
    out, ours = gradients(conv2d, x, weight, bias, padding, grad_out)
    assert type(out.grad_fn).__name__ == "_DepthwiseBackward"  # the path under test ran
    expected_out, theirs = gradients(F.conv2d, x, weight, bias, padding, grad_out)
    torch.testing.assert_close(out, expected_out)
    for mine, reference in zip(ours, theirs):
        torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-4)


def test_only_the_gradients_asked_for_are_computed():
    x = torch.randn(2, 4, 6, 6)  # a frozen layer's output: no gradient wanted for it
    weight = torch.randn(4, 1, 5, 5, requires_grad=True)
    out = conv2d(x, weight, None, 1, 2, 1, 4)
    (grad_w,) = torch.autograd.grad(out.sum(), [weight])
    expected = torch.autograd.grad(F.conv2d(x, weight, None, 1, 2, 1, 4).sum(), [weight])[0]
    torch.testing.assert_close(grad_w, expected, rtol=1e-4, atol=1e-4)


def test_plain_convolution_without_gradients_and_for_other_filters():
    weight = torch.randn(4, 1, 5, 5, requires_grad=True)
    with torch.no_grad():  # evaluation and export: F.conv2d itself
        assert conv2d(torch.randn(2, 4, 6, 6), weight, None, 1, 2, 1, 4).grad_fn is None
    small = torch.randn(4, 1, 3, 3, requires_grad=True)  # oneDNN's 3x3 is fast already
    assert type(conv2d(torch.randn(2, 4, 6, 6), small, None, 1, 1, 1, 4).grad_fn
                ).__name__ == "ConvolutionBackward0"
    dense = torch.randn(8, 4, 5, 5, requires_grad=True)  # not depthwise
    assert type(conv2d(torch.randn(2, 4, 6, 6), dense, None, 1, 2, 1, 1).grad_fn
                ).__name__ == "ConvolutionBackward0"
    strided = conv2d(torch.randn(2, 4, 6, 6), weight, None, 2, 2, 1, 4)  # the split lost
    assert type(strided.grad_fn).__name__ == "ConvolutionBackward0"


def test_autocast_keeps_plain_convolution():
    weight = torch.randn(4, 1, 5, 5, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv2d(torch.randn(2, 4, 6, 6), weight, None, 1, 2, 1, 4)
    out.float().sum().backward()  # the bf16 pass differentiates as autograd's own
    assert out.dtype == torch.bfloat16 and weight.grad.shape == weight.shape
