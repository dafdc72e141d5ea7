import pytest
import torch

from imclass.config import ModelConfig
from imclass.errors import ConfigError
from imclass.models import MODELS, build_model, count_parameters, flops_per_image


@pytest.mark.parametrize("widths,depths,channels,side", [
    ((8,), (1,), 1, 28), ((8, 16), (2, 1), 3, 32), ((8, 16, 32), (1, 1, 2), 1, 64)])
def test_cnn_outputs_one_logit_per_class_for_any_input_size(widths, depths, channels, side):
    model = build_model(ModelConfig(widths=widths, depths=depths), channels, 7)
    assert model(torch.zeros(5, channels, side, side)).shape == (5, 7)
    assert model.embed(torch.zeros(2, channels, side, side)).shape == (2, widths[-1])
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == sum(depths) and all(c.kernel_size == (3, 3) for c in convs)
    pools = [m for m in model.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert len(pools) == len(widths) - 1


def test_parameter_and_flop_counts_grow_with_width():
    small = build_model(ModelConfig(widths=(8, 16), depths=(1, 1)), 1, 10)
    large = build_model(ModelConfig(widths=(16, 32), depths=(1, 1)), 1, 10)
    # conv 1->8 (72 weights), BN 8 (16), conv 8->16 (1152), BN 16 (32), head 16*10+10
    assert count_parameters(small) == 72 + 16 + 1152 + 32 + 170
    f_small, f_large = flops_per_image(small, (1, 28, 28)), flops_per_image(large, (1, 28, 28))
    # the two convs dominate: 2 * (28*28*8*9 + 14*14*16*8*9) multiply-adds ~ 0.56 MFLOPs
    assert 0.5e6 < f_small < 0.7e6 and f_large > 3 * f_small


def test_unknown_model_suggests_the_nearest_names():
    with pytest.raises(ConfigError, match=r"unknown model 'resnet5O'; did you mean .*resnet50"):
        build_model(ModelConfig(name="resnet5O"), 1, 10)
    with pytest.raises(ConfigError, match="imclass models lists them all"):
        build_model(ModelConfig(name="no-such-net"), 1, 10)
    assert "cnn" in MODELS


def test_config_knows_exactly_the_registry_s_own_models():
    from imclass.config import OWN_MODELS
    assert set(OWN_MODELS) == set(MODELS)


def test_rescnn_stages_are_a_conv_then_residual_blocks_that_start_as_the_identity():
    model = build_model(ModelConfig(name="rescnn", widths=(8, 16, 32), depths=(0, 2, 1)), 1, 5)
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 5)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 3 + 2 * (0 + 2 + 1)  # a conv per stage, two per residual block
    blocks = [m for m in model.modules() if type(m).__name__ == "Residual"]
    assert len(blocks) == 3
    block = blocks[0].eval()
    for bn in block.body.modules():  # a body that outputs zeros leaves x as it was
        if isinstance(bn, torch.nn.BatchNorm2d):
            torch.nn.init.zeros_(bn.weight)
    x = torch.randn(2, 16, 14, 14)
    assert torch.equal(block(x), x)
    # ResNet-9's shape at half width, as the long recipe trains it on 28x28 images
    nine = build_model(ModelConfig(name="rescnn", widths=(32, 64, 128, 256),
                                   depths=(0, 1, 0, 1)), 1, 10)
    assert 1.6e6 < count_parameters(nine) < 1.7e6
    assert 69e6 < flops_per_image(nine, (1, 28, 28)) < 72e6


def test_the_cnn_refuses_an_empty_stage_and_both_need_a_depth_per_width():
    from imclass.config import from_dict
    with pytest.raises(ConfigError, match="at least one conv layer in every stage"):
        from_dict({"widths": "8,16", "depths": "1,0"})
    with pytest.raises(ConfigError, match="'widths' has 2 stages but 'depths' has 3"):
        from_dict({"name": "rescnn", "widths": "8,16", "depths": "1,0,1"})
    with pytest.raises(ConfigError, match="rescnn has no pretrained weights"):
        from_dict({"name": "rescnn", "pretrained": True})
    assert from_dict({"name": "rescnn", "depths": "0,1,0,1"}).model.depths == (0, 1, 0, 1)
