"""The head on cached features: the frozen backbone scores each view once, the head trains on
the vectors, and a resumed or repeated run draws the same batches."""

import torch
from torch import nn

from imclass.config import TrainConfig
from imclass.data.batches import Batches
from imclass.features import FeatureBatches, FeatureCache, embed_all, views_within
from imclass.tasks import get_task
from imclass.training import fit
from test_train_loop import tiny_problem


class Net(nn.Module):
    """A backbone whose pooled output the head reads, as timm networks are wrapped."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, 2)
        self.embedded = 0  # images passed through the backbone

    def embed(self, x):
        self.embedded += len(x)
        return self.backbone(x)

    def forward(self, x):
        return self.head(self.embed(x))


def test_each_pass_draws_the_next_view_in_a_seeded_order():
    features = torch.arange(3 * 10 * 2, dtype=torch.float32).view(3, 10, 2)
    labels = torch.arange(10)
    batches = FeatureBatches(features, labels, 4, seed=1)
    seen = {}
    for epoch in range(1, 5):
        batches.epoch = epoch
        rows = [(x, y) for x, y in batches]
        seen[epoch] = torch.cat([y for _, y in rows])
        x, y = rows[0]
        assert torch.equal(x, features[epoch % 3][y])  # the epoch's view, rows as labelled
        assert sorted(seen[epoch].tolist()) == list(range(10)) and len(rows) == 3
    assert not torch.equal(seen[1], seen[2])
    batches.epoch, batches.skip = 2, 1  # a resumed epoch: its first batch already done
    assert torch.equal(torch.cat([y for _, y in batches]), seen[2][4:])
    assert len(FeatureBatches(features, labels, 4, drop_last=True)) == 2


def test_views_are_held_within_the_memory_budget():
    assert views_within(8, 1000, 1280) == 8
    assert views_within(8, 1_000_000, 1280) == 1


def test_the_frozen_stage_scores_each_view_once_and_trains_only_the_head():
    torch.manual_seed(0)
    data, norm = tiny_problem()
    model = Net()
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    train = Batches(data, 16, norm, shuffle=True, channels_last=False)
    val = Batches(data, 64, norm, channels_last=False)
    plain = Batches(data, 64, norm, channels_last=False)
    cache = FeatureCache(2, 0, 0.0, plain, train, val)
    cfg = TrainConfig(epochs=7, freeze_epochs=6, feature_views=2, lr=0.5, optimizer="sgd")
    loss = get_task("multiclass").loss(cfg.loss, cfg.label_smoothing)
    after_head, after_tuning = {}, {}

    def snapshot(event, info):
        if event == "epoch_end":
            kept = after_head if info["epoch"] == 6 else after_tuning
            kept.update({k: v.clone() for k, v in model.backbone.state_dict().items()})
    result = fit(model, train, val, loss, cfg, torch.device("cpu"), [snapshot],
                 features=cache)
    head_epochs = [h for h in result.history if h["stage"] == 1]
    assert len(head_epochs) == 6 and result.stages[0]["name"].startswith("head on cached")
    # 2 views of the 64 training images, the 64 validation images once; then one
    # fine-tuning epoch (64) and its validation (64): not 6 passes of images
    assert model.embedded == 2 * 64 + 64 + 64 + 64
    assert head_epochs[-1]["val_acc"] > 0.9
    assert head_epochs[-1]["train_loss"] < head_epochs[0]["train_loss"]
    # the head learned on the vectors; the backbone (weights and BatchNorm statistics) did
    # not move until fine-tuning, which moved it
    assert all(torch.equal(backbone_before[k], after_head[k]) for k in after_head)
    assert not torch.equal(backbone_before["0.weight"], after_tuning["0.weight"])


def test_cached_features_are_the_backbones_output():
    data, norm = tiny_problem()
    model = Net()
    plain = Batches(data, 20, norm, channels_last=False)
    cached = embed_all(model, plain, views=1)
    assert cached.shape == (1, 64, 8)
    model.eval()
    with torch.no_grad():
        direct = model.backbone(norm.apply(data.images.float().div(255)))
    assert torch.allclose(cached[0], direct, atol=1e-5)


def test_fine_tuning_gets_its_own_patience_after_the_head_stopped_early():
    """Early stopping in the head's stage moves on to fine-tuning, which then has `patience`
    epochs to beat the head (it used to be stopped after one: the head's best was already
    `patience` epochs old)."""
    from imclass.training import EarlyStopping
    torch.manual_seed(0)
    data, norm = tiny_problem()
    model = Net()
    train = Batches(data, 16, norm, shuffle=True, channels_last=False)
    val = Batches(data, 64, norm, channels_last=False)
    cfg = TrainConfig(epochs=10, freeze_epochs=5, lr=1e-12, fine_tune_lr=1e-12, patience=2,
                      freeze_bn=True)
    loss = get_task("multiclass").loss(cfg.loss, cfg.label_smoothing)
    result = fit(model, train, val, loss, cfg, torch.device("cpu"), [EarlyStopping(2)])
    stages = [h["stage"] for h in result.history]
    assert stages == [1, 1, 1, 2, 2]  # no improvement at that rate: patience in each stage
    assert result.stopped_early and result.best_epoch == 1
