"""The test pass's frozen model (imclass.inference): the eager model's answers, BatchNorm
folded away, and the eager model kept wherever the frozen copy could answer differently."""
import pytest
import torch
from torch import nn

from imclass.config import ModelConfig
from imclass.inference import Frozen, for_inference
from imclass.models import build_model
from imclass.models.weights import resolve_architecture


@pytest.mark.parametrize("name", ["cnn", "rescnn", "efficientnet_lite0"])
def test_the_frozen_model_gives_the_eager_logits_and_features(name):
    torch.manual_seed(0)
    side = 64 if name == "efficientnet_lite0" else 28
    config = ModelConfig(name=name)
    model = build_model(config, 3, 5, resolve_architecture(config)[0])
    model.train()
    for _ in range(2):  # batch statistics unlike the initial ones, for the fold to carry
        model(torch.randn(8, 3, side, side) * 2 + 1)
    model.eval()
    x = torch.randn(7, 3, side, side).contiguous(memory_format=torch.channels_last)
    frozen = for_inference(model, x[:3], 1000)
    assert for_inference(model, x[:3], 20) is model  # too few images for freezing to pay
    assert isinstance(frozen, Frozen) and frozen.eval() is frozen
    with torch.no_grad():
        logits, features = model.forward_with_embedding(x)
        got_logits, got_features = frozen.forward_with_embedding(x)  # 7: another batch size
        assert torch.allclose(got_logits, logits, rtol=1e-3, atol=1e-4)
        assert torch.allclose(got_features, features, rtol=1e-3, atol=1e-4)
        assert torch.allclose(frozen(x[:1]), model(x[:1]), rtol=1e-3, atol=1e-4)
        # the batch norms are gone: folded into the convolutions
        assert "batch_norm" not in str(frozen.traced.graph)


class BatchSizeShortcut(nn.Module):
    """A model whose Python branches on the batch size: the tracer bakes in the branch of
    the two images it sees, so the frozen model would answer other batches wrongly."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward_with_embedding(self, x):
        features = x.flatten(1) * (0 if x.shape[0] == 2 else 1)
        return self.linear(features), features

    def forward(self, x):
        return self.forward_with_embedding(x)[0]


def test_a_model_the_frozen_copy_disagrees_with_is_scored_eagerly():
    model = BatchSizeShortcut()
    x = torch.randn(5, 1, 2, 2)
    assert for_inference(model, x, 1000) is model
    assert for_inference(model, x[:2], 1000) is model  # too few to check on another batch
    assert model.training  # left in the mode it came in (the scorer sets eval itself)
    linear = nn.Linear(4, 3)
    assert for_inference(linear, x.flatten(1), 1000) is linear  # no embedding: as it is
