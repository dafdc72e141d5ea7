"""Validation over the frozen layers' kept output: the same figures as a full pass, the frozen
layers run once a stage, and a network that is not a chain of its children validated in full."""

import copy

import torch
from torch import nn

from imclass import prefix_cache
from imclass.config import ModelConfig, TrainConfig
from imclass.data.batches import Batches, Normalization
from imclass.data.images import ImageSet
from imclass.finetune import apply_stage, plan_stages, train_mode
from imclass.models import build_model
from imclass.prefix_cache import (FrozenActivations, frozen_validation, layer_chain,
                                  validation_chains)
from imclass.tasks import get_task
from imclass.training import fit, validate, weight_average

SIDE = 32
LOSS = get_task("multiclass").loss("cross-entropy", 0.0)


def lite0() -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(name="efficientnet_lite0"), 3, 3, "tf_efficientnet_lite0")


def images(n: int = 40, seed: int = 0) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    return ImageSet(torch.randint(0, 256, (n, 3, SIDE, SIDE), dtype=torch.uint8, generator=g),
                    torch.arange(n) % 3, ("a", "b", "c"))


def batches(data: ImageSet, size: int, shuffle: bool = False) -> Batches:
    return Batches(data, size, Normalization((0.5,) * 3, (0.25,) * 3), shuffle=shuffle,
                   channels_last=False)


class CountCalls:
    """How many images a module has seen (a forward hook)."""

    def __init__(self, module: nn.Module):
        self.images = 0
        module.register_forward_hook(lambda m, args, out: self.count(len(args[0])))

    def count(self, n: int) -> None:
        self.images += n


def test_lite0_is_a_chain_of_its_layers_and_other_networks_are_refused():
    model = lite0()
    x = next(iter(batches(images(), 4)))[0]
    chain = layer_chain(model, x[:2])
    assert chain is not None and chain[0] is model.backbone.conv_stem
    assert chain[-1] is model.backbone.bn2 and model.backbone.blocks[6] in chain

    class Doubled(nn.Module):  # forward_features does more than its children
        def __init__(self):
            super().__init__()
            self.backbone = copy.deepcopy(model.backbone)
            forward = self.backbone.forward_features
            self.backbone.forward_features = lambda t: 2 * forward(t)
    assert layer_chain(Doubled(), x[:2]) is None
    assert layer_chain(build_model(ModelConfig(name="cnn"), 3, 3), x[:2]) is None


def test_frozen_layers_run_once_and_validation_gives_the_same_figures():
    model = lite0()
    stage = plan_stages(model, TrainConfig(epochs=4, freeze_epochs=2, unfreeze="last-2"))[1]
    apply_stage(model, stage)  # the top two groups and the head train; the rest is frozen
    val = batches(images(), 8)  # 5 batches
    chains = validation_chains(model, model, val)
    assert chains is not None
    k = prefix_cache.frozen_length(chains[0])
    assert 0 < k < len(chains[0])
    stem = CountCalls(model.backbone.conv_stem)
    # room for two of the five batches' activations: the rest run in full every time
    one_batch = next(iter(FrozenActivations(chains[1][:k], val, torch.device("cpu"), None)))[0]
    limit = 2 * one_batch.numel() * one_batch.element_size()
    shown, over = frozen_validation(model, chains, val, torch.device("cpu"), None)
    over.limit = limit
    stem.images = 0
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        cached = validate(shown, over, LOSS, torch.device("cpu"))
        full = validate(model, val, LOSS, torch.device("cpu"))
        assert cached == full  # the same layers on the same batches: the same numbers
        train_mode(model)  # one step moves the layers above, never those below
        LOSS(model(next(iter(batches(images(seed=1), 8)))[0]), torch.arange(8) % 3).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert len(over.kept) == 2
    # the stem: twice in full (40 images each), once for the kept pass's 5 batches, then only
    # the 3 batches beyond the limit; and the training steps' 2 x 8 images
    assert stem.images == 2 * 40 + 40 + 24 + 2 * 8


def test_a_fine_tuning_run_validates_as_before(monkeypatch):
    def run(cache: bool):
        model = lite0()
        cfg = TrainConfig(epochs=4, freeze_epochs=2, unfreeze="last-3", lr=0.05,
                          optimizer="sgd", freeze_bn=True, ema=0.9, seed=0)
        average = weight_average(model, cfg.ema)  # what validates
        stem = CountCalls(average.module.backbone.conv_stem)
        train, val = batches(images(48, seed=2), 16, shuffle=True), batches(images(), 16)
        if not cache:
            monkeypatch.setattr("imclass.training.validation_chains", lambda *a: None)
        torch.manual_seed(0)
        history = fit(model, train, val, LOSS, cfg, torch.device("cpu"), ema=average).history
        return history, stem.images
    cached, cached_images = run(cache=True)
    full, full_images = run(cache=False)
    columns = ("train_loss", "val_loss", "val_acc")
    assert [[h[c] for c in columns] for h in cached] == [[h[c] for c in columns] for h in full]
    assert full_images == 4 * 40
    # the check that it is a chain (2 images through forward_features and through the
    # chain), then one pass over the 40 images a stage
    assert cached_images == 2 * 2 + 2 * 40
