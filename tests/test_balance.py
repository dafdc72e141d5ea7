"""Imbalanced classes: the weights and draws of each --balance method, the recipe's trigger,
validation's balanced figures, the splits keeping rare classes, and a run end to end."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn import metrics as skm

from imagedata import FORMATS, draw
from imclass import cli
from imclass.balance import (AUTO_METHOD, AUTO_RATIO, class_counts, class_weights,
                             positive_weights, resolve, sample_weights)
from imclass.config import TrainConfig
from imclass.data.batches import Batches, Normalization
from imclass.data.images import ImageSet
from imclass.data.splits import stratified_split
from imclass.errors import ConfigError
from imclass.tasks import get_task
from imclass.training import improves, mark_best, selection


def test_inverse_frequency_weights_average_one_over_the_images():
    w = class_weights([100, 10, 0], "weights")
    assert w[1] / w[0] == pytest.approx(10)
    assert (100 * w[0] + 10 * w[1]) / 110 == pytest.approx(1)
    assert w[2] == 0  # a class with no training image


def test_square_root_weights_shift_halfway_on_a_log_scale():
    w = class_weights([100, 1], "sqrt")
    assert w[1] / w[0] == pytest.approx(10)
    assert (100 * w[0] + w[1]) / 101 == pytest.approx(1)
    assert positive_weights([10], 100, "sqrt").tolist() == pytest.approx([3.0])


def test_effective_number_weights_lie_between_none_and_inverse_frequency():
    w = class_weights([1000, 10], "effective")
    ratio = float(w[1] / w[0])
    assert 1 < ratio < 100
    beta = 0.999  # Cui et al.: (1 - beta) / (1 - beta ** n)
    assert ratio == pytest.approx((1 - beta ** 1000) / (1 - beta ** 10), rel=1e-4)


def test_multilabel_positive_weights_are_negatives_over_positives():
    w = positive_weights([10, 50, 0], 100, "weights")
    assert w.tolist() == pytest.approx([9.0, 1.0, 1.0])  # no positive: left at 1


def test_weighted_cross_entropy_weighs_each_image_by_its_class():
    balance = resolve("weights", [30, 10], 40)
    logits, y = torch.randn(6, 2), torch.tensor([0, 0, 0, 1, 1, 0])
    w = class_weights([30, 10], "weights")
    per_image = F.cross_entropy(logits, y, reduction="none")
    expected = (per_image * w[y]).sum() / w[y].sum()
    for task in ("multiclass", "binary", "hierarchical"):  # binary: a two-way softmax
        loss = get_task(task).loss("cross-entropy", 0.0, balance)(logits, y)
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    plain = get_task("multiclass").loss("cross-entropy", 0.0, resolve("none", [30, 10], 40))
    assert plain(logits, y).item() == pytest.approx(per_image.mean().item(), rel=1e-5)


def test_multilabel_loss_weighs_positives():
    balance = resolve("weights", [10, 50], 100)
    logits, y = torch.randn(4, 2), torch.tensor([[1., 0.], [0., 1.], [0., 0.], [1., 1.]])
    expected = F.binary_cross_entropy_with_logits(logits, y, pos_weight=torch.tensor([9., 1.]))
    assert get_task("multilabel").loss("bce", 0.0, balance)(logits, y).item() == \
        pytest.approx(expected.item(), rel=1e-5)


def test_mse_loss_refuses_class_weights_and_names_the_way_out():
    with pytest.raises(ConfigError, match="--balance sampler"):
        get_task("multiclass").loss("mse", 0.0, resolve("weights", [30, 10], 40))


def test_auto_balances_only_past_the_ratio():
    assert resolve("auto", [100, 100, 100], 300).method == "none"
    assert resolve("auto", [100, int(100 / AUTO_RATIO) + 1], 200).method == "none"
    chosen = resolve("auto", [100, 20], 120)
    assert chosen.method == AUTO_METHOD and "5.0x" in chosen.reason
    assert resolve("sampler", [100, 100], 200).method == "sampler"  # asked for: kept
    with pytest.raises(ConfigError, match="valid"):
        resolve("oversample", [1, 2], 3)


def test_select_metric_auto_follows_balancing():
    assert selection(TrainConfig()) == "loss"
    assert selection(TrainConfig(balance="weights")) == "balanced-accuracy"
    assert selection(TrainConfig(balance="sampler", select_metric="macro-f1")) == "macro-f1"
    assert selection(TrainConfig(balance="none", select_metric="accuracy")) == "accuracy"


def _set(labels: torch.Tensor, names) -> ImageSet:
    return ImageSet(store=torch.zeros(len(labels), 1, 4, 4, dtype=torch.uint8), labels=labels,
                    class_names=tuple(names))


def test_sampler_draws_every_class_about_equally_and_is_seeded():
    labels = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    data = _set(labels, "abc")

    def drawn(seed):
        batches = Batches(data, 100, Normalization((0.0,), (1.0,)), shuffle=True, seed=seed,
                          draw_weights=sample_weights(labels))
        return torch.cat([y for _, y in batches])
    first = drawn(0)
    assert len(first) == 1000
    shares = torch.bincount(first, minlength=3).float() / len(first)
    assert shares.min() > 0.27 and shares.max() < 0.40  # a third each, not 90/9/1
    assert torch.equal(first, drawn(0)) and not torch.equal(first, drawn(1))


def test_multilabel_sample_weights_follow_the_rarest_label():
    hot = torch.tensor([[1., 0.], [1., 0.], [1., 0.], [1., 1.], [0., 0.]])
    w = sample_weights(hot)
    assert w[0] == pytest.approx(1 / 4) and w[3] == pytest.approx(1.0)  # label 2: 1 image
    assert w[4] == pytest.approx(1.0)  # no label: a group of its own (one image)
    assert class_counts(hot, 2) == [4, 1]


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_validation_tally_gives_scikit_learns_figures(task):
    rng = np.random.default_rng(0)
    t = get_task(task)
    logits = torch.tensor(rng.normal(size=(200, 4)), dtype=torch.float32)
    if task == "multiclass":
        y = torch.tensor(rng.choice(4, 200, p=[0.7, 0.2, 0.08, 0.02]))
        tally = t.tally(logits[:120], y[:120]) + t.tally(logits[120:], y[120:])
        pred = logits.argmax(1).numpy()
        expected_bal = skm.balanced_accuracy_score(y.numpy(), pred)
        expected_f1 = skm.f1_score(y.numpy(), pred, average="macro")
    else:
        y = torch.tensor(rng.random((200, 4)) < [0.5, 0.2, 0.1, 0.05], dtype=torch.float32)
        tally = t.tally(logits[:120], y[:120]) + t.tally(logits[120:], y[120:])
        pred = (logits > 0).numpy()
        expected_bal = np.mean([skm.balanced_accuracy_score(y[:, k].numpy(), pred[:, k])
                                for k in range(4)])
        expected_f1 = skm.f1_score(y.numpy(), pred, average="macro")
    scores = t.scores(tally.numpy())
    assert scores["balanced_acc"] == pytest.approx(expected_bal)
    assert scores["macro_f1"] == pytest.approx(expected_f1)


def test_best_epoch_by_balanced_accuracy_with_ties_broken_by_loss():
    history = [{"epoch": 1, "val_loss": 0.5, "val_balanced_acc": 0.6},
               {"epoch": 2, "val_loss": 0.4, "val_balanced_acc": 0.5},
               {"epoch": 3, "val_loss": 0.45, "val_balanced_acc": 0.6}]
    assert improves(history[0], {}, "balanced-accuracy", 0.0)
    assert not improves(history[1], history[0], "balanced-accuracy", 0.0)  # lower loss, worse
    assert improves(history[2], history[0], "balanced-accuracy", 0.0)  # tie: the lower loss
    assert improves(history[1], history[0], "loss", 0.0)
    marked = mark_best(history, TrainConfig(balance="weights"))
    assert [h["best"] for h in marked] == [False, False, True]
    assert [h["best"] for h in mark_best(history, TrainConfig())] == [False, True, False]


def test_stratified_split_holds_out_every_rare_class():
    labels = torch.tensor([0] * 400 + [1] * 400 + [2] * 4 + [3] * 6)
    for seed in range(3):
        kept, held = stratified_split(labels, 0.1, seed)
        assert len(held) == 81 and len(kept) == 729
        assert set(torch.cat([kept, held]).tolist()) == set(range(len(labels)))
        assert torch.bincount(labels[held], minlength=4).min() >= 1  # scikit-learn gave 0
        assert torch.bincount(labels[kept], minlength=4).min() >= 3


def imbalanced_folder(root, counts: dict[str, int], n_test: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for name, n in counts.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n if split == "train" else n_test):
                Image.fromarray(draw((name,), rng)).save(folder / f"{i:03d}{FORMATS[i % 2]}")
    return root


@pytest.mark.slow
def test_an_imbalanced_folder_is_balanced_and_reported_per_class(tmp_path, capsys):
    root = imbalanced_folder(tmp_path / "shop", {"red": 60, "green": 60, "blue": 12},
                             n_test=6)
    out = tmp_path / "run"
    assert cli.main(["train", "--data", str(root), "--out", str(out), "--cache-dir",
                     str(tmp_path / "cache"), "--model", "cnn", "--epochs", "3",
                     "--batch-size", "16", "--lr", "0.05"]) == 0
    console = capsys.readouterr().err
    assert "balance: class-weighted loss (inverse square root of frequency)" in console
    assert "recall per class, lowest first:" in console and "blue" in console
    run = json.loads((out / "run.json").read_text())
    assert run["balance"]["method"] == AUTO_METHOD == "sqrt"
    assert run["balance"]["ratio"] > AUTO_RATIO
    assert run["select_metric"] == "balanced-accuracy"
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["test"]
    recalls = [m["recall"] for m in test["per_class"].values()]
    assert test["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    assert metrics["validation"]["select_metric"] == "balanced-accuracy"
    assert metrics["validation"]["val_score"] == metrics["validation"]["val_balanced_acc"]
    history = (out / "history.csv").read_text().splitlines()
    assert "val_balanced_acc" in history[0].split(",")
    assert not math.isnan(float(history[1].split(",")[6]))
    report = (out / "report.html").read_text()
    assert "Per class, lowest recall first" in report and "--balance sqrt" in report
    assert "the highest validation balanced-accuracy" in report
    config = (out / "config.yaml").read_text()
    assert "balance: sqrt" in config and "select_metric: balanced-accuracy" in config
    analysis = json.loads((out / "analysis.json").read_text())
    few = [f for f in analysis["findings"] if f["code"] == "few_test_images"]
    assert len(few) == 3 and "steps of 17 points" in few[0]["message"]


@pytest.mark.slow
def test_sampler_run_and_a_balanced_set_left_alone(tmp_path, capsys):
    root = imbalanced_folder(tmp_path / "even", {"red": 30, "green": 30, "blue": 30})
    common = ["--cache-dir", str(tmp_path / "cache"), "--model", "cnn", "--epochs", "2",
              "--batch-size", "16", "--lr", "0.05", "--quiet"]
    assert cli.main(["train", "--data", str(root), "--out", str(tmp_path / "a"), *common]) == 0
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["balance"]["method"] == "none" and run["select_metric"] == "loss"
    assert cli.main(["train", "--data", str(root), "--out", str(tmp_path / "b"), *common,
                     "--balance", "sampler", "--select-metric", "macro-f1"]) == 0
    run = json.loads((tmp_path / "b" / "run.json").read_text())
    assert run["balance"]["method"] == "sampler" and run["select_metric"] == "macro-f1"
    validation = json.loads((tmp_path / "b" / "metrics.json").read_text())["validation"]
    assert validation["val_score"] == validation["val_macro_f1"]


def test_the_balance_line_names_the_validation_figure_only_when_there_is_validation():
    """A run without validation (the recipe's small sets) keeps its last epoch: the console
    may not promise a best epoch chosen by validation balanced accuracy."""
    from types import SimpleNamespace

    from imclass.config import RunConfig
    from imclass.run_setup import balance_for
    train = _set(torch.tensor([0] * 100 + [1] * 5), "ab")  # 20x: balanced by default
    for validated, promised in ((True, True), (False, False)):
        lines = []
        cfg, balance = balance_for(RunConfig(), SimpleNamespace(train=train,
                                                                validated=validated),
                                   lines.append)
        assert balance.method != "none" and cfg.train.balance == balance.method
        assert lines[0].startswith("balance: ")
        assert ("the best epoch has the best validation balanced accuracy" in lines[0]) \
            == promised
