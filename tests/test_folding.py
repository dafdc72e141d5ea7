"""BatchNorms folded into their convolutions (imclass.models.folding): the same outputs and
gradients as the model unfolded, the same state dict, only where a convolution feeds its
BatchNorm alone."""

import copy

import pytest
import torch
from torch import nn

from imclass.config import ModelConfig
from imclass.models import build_model
from imclass.models.folding import _scramble_statistics, fold_norms


def frozen_norms(model: nn.Module) -> nn.Module:
    """Training mode with every BatchNorm on its running statistics (--freeze-bn)."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    return model


def loss_and_grads(model: nn.Module, x: torch.Tensor):
    torch.manual_seed(1)  # the same dropout draws in both models
    loss = model(x).square().mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                           if p.grad is not None}


@pytest.mark.parametrize("name,architecture,side,pairs", [
    ("efficientnet_lite0", "tf_efficientnet_lite0", 64, 49),  # Conv2dSame among them
    ("rescnn", None, 28, 16)])
def test_folded_model_trains_as_the_unfolded_one(name, architecture, side, pairs):
    torch.manual_seed(0)
    plain = build_model(ModelConfig(name=name), 3, 4, architecture)
    _scramble_statistics(plain)  # a fresh BatchNorm is the identity: nothing to see
    folded = copy.deepcopy(plain)
    x = torch.randn(4, 3, side, side)
    assert fold_norms(folded, x[:2]) == pairs
    assert list(folded.state_dict()) == list(plain.state_dict())
    loss_p, grads_p = loss_and_grads(frozen_norms(plain), x)
    loss_f, grads_f = loss_and_grads(frozen_norms(folded), x)
    torch.testing.assert_close(loss_f, loss_p, rtol=1e-4, atol=1e-6)
    assert grads_f.keys() == grads_p.keys()
    for key, grad in grads_p.items():  # the BatchNorms' scale and shift learn as before
        torch.testing.assert_close(grads_f[key], grad, rtol=1e-3, atol=1e-5, msg=key)


def test_norms_in_training_mode_still_use_and_update_batch_statistics():
    torch.manual_seed(0)
    plain = build_model(ModelConfig(name="rescnn"), 3, 4)
    folded = copy.deepcopy(plain)
    x = torch.randn(8, 3, 28, 28)
    assert fold_norms(folded, x[:2]) > 0
    outputs = []
    for model in (folded, plain):
        torch.manual_seed(1)  # the same dropout draws
        outputs.append(model.train()(x))
    torch.testing.assert_close(*outputs)
    for a, b in zip(folded.buffers(), plain.buffers()):
        torch.testing.assert_close(a, b)
    assert any(b.abs().sum() > 0 for n, b in folded.named_buffers() if "running_mean" in n)
    torch.testing.assert_close(folded.eval()(x), plain.eval()(x), rtol=1e-4, atol=1e-5)


def test_a_copy_folds_with_its_own_norms():
    """The weight average (--ema) is a deep copy: its convolutions read its BatchNorms."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="cnn"), 3, 4)
    x = torch.randn(2, 3, 28, 28)
    fold_norms(model, x)
    twin = copy.deepcopy(model).eval()
    before = model.eval()(x)
    _scramble_statistics(twin)
    assert not torch.allclose(twin(x), before)
    torch.testing.assert_close(model(x), before)


class SharedOutput(nn.Module):
    """A convolution whose output feeds its BatchNorm and a shortcut: not foldable."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.norm(y) + y


class TwoNormsOfOneConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.a, self.b = nn.BatchNorm2d(3), nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.a(y) * self.b(y)


@pytest.mark.parametrize("make", [SharedOutput, TwoNormsOfOneConv])
def test_a_convolution_read_elsewhere_is_left_alone(make):
    torch.manual_seed(0)
    model = make().eval()
    _scramble_statistics(model)
    x = torch.randn(2, 3, 8, 8)
    expected = model(x)
    assert fold_norms(model, x) == 0
    assert type(model.conv) is nn.Conv2d
    torch.testing.assert_close(model(x), expected)


def test_a_norm_before_its_convolution_is_not_paired():
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1), nn.ReLU()).eval()
    assert fold_norms(model, torch.randn(2, 3, 8, 8)) == 0


def test_folding_our_cnn_does_not_import_timm():
    """timm costs 1.5 s to import: a run of our own CNN must not pay it for the folding."""
    import subprocess
    import sys
    code = ("import sys, torch\n"
            "from imclass.config import ModelConfig\n"
            "from imclass.models import build_model\n"
            "from imclass.models.folding import fold_norms\n"
            "model = build_model(ModelConfig(name='cnn'), 1, 10)\n"
            "assert fold_norms(model, torch.randn(2, 1, 28, 28)) > 0\n"
            "assert 'timm' not in sys.modules, 'timm imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
