import json

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, roc_auc_score

from imclass import checkpoint
from imclass.atomic import atomic_write
from imclass.errors import DataError
from imclass.metrics import classification_metrics


def fake_predictions(n=300, k=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.5  # better than chance, not perfect
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, probs


def test_metrics_agree_with_scikit_learn():
    y, probs = fake_predictions()
    m = classification_metrics(y, probs, ["a", "b", "c", "d"])
    assert m["accuracy"] == pytest.approx((probs.argmax(1) == y).mean())
    assert m["f1_macro"] == pytest.approx(f1_score(y, probs.argmax(1), average="macro"))
    assert m["roc_auc_macro"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr"))
    cm = np.array(m["confusion_matrix"])
    assert cm.sum() == 300 and np.trace(cm) == (probs.argmax(1) == y).sum()
    assert cm[:, :].sum(1).tolist() == [m["per_class"][c]["support"] for c in "abcd"]
    assert set(m) >= {"precision_macro", "recall_macro", "precision_weighted",
                      "recall_weighted", "f1_weighted", "per_class"}


def test_a_class_absent_from_the_test_set_has_no_auc():
    y, probs = fake_predictions(k=3)
    y[y == 2] = 0
    m = classification_metrics(y, probs, ["a", "b", "c"])
    assert m["per_class"]["c"]["auc"] is None and m["per_class"]["c"]["support"] == 0
    assert m["roc_auc_macro"] == pytest.approx(np.mean([m["per_class"][c]["auc"] for c in "ab"]))


def test_checkpoint_round_trip_and_tamper_check(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    checkpoint.save(tmp_path / "best", model, {"class_names": ["x"], "task": "multiclass"})
    state, meta = checkpoint.load(tmp_path / "best")
    assert meta["class_names"] == ["x"] and meta["weights_file"] == "best.safetensors"
    for key, value in model.state_dict().items():
        assert torch.equal(state[key], value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "best.safetensors"]
    sidecar = json.loads((tmp_path / "best.json").read_text())
    sidecar["weights_sha256"] = "0" * 64
    (tmp_path / "best.json").write_text(json.dumps(sidecar))
    with pytest.raises(DataError, match="does not match the checksum"):
        checkpoint.load(tmp_path / "best")


def test_a_checkpoint_saved_under_two_names_writes_its_weights_once(tmp_path):
    """`best` and `last` after an improving epoch: one file of weights, two sidecars naming
    their own; replacing one later leaves the other as it was."""
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    checkpoint.save(tmp_path / "best", model, {"epoch": 1}, also=tmp_path / "last")
    best, last = tmp_path / "best.safetensors", tmp_path / "last.safetensors"
    assert best.stat().st_ino == last.stat().st_ino  # a hard link, not a second write
    for stem in ("best", "last"):
        state, meta = checkpoint.load(tmp_path / stem)
        assert meta["weights_file"] == f"{stem}.safetensors" and meta["epoch"] == 1
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        model[0].weight.add_(1.0)
    checkpoint.save(tmp_path / "last", model, {"epoch": 2})
    assert not torch.equal(checkpoint.load(tmp_path / "best")[0]["0.weight"],
                           checkpoint.load(tmp_path / "last")[0]["0.weight"])
    assert checkpoint.load(tmp_path / "best")[1]["epoch"] == 1


def test_a_failed_write_leaves_no_file_behind(tmp_path):
    def fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "x.safetensors", fail)
    assert list(tmp_path.iterdir()) == []


def test_top_k_calibration_and_most_confused():
    from sklearn.metrics import top_k_accuracy_score

    from imclass.metrics import averaged_roc, calibration, most_confused
    y, probs = fake_predictions(n=500, k=6)
    m = classification_metrics(y, probs, list("abcdef"))
    assert m["top_1"] == pytest.approx(m["accuracy"])
    assert m["top_3"] == pytest.approx(top_k_accuracy_score(y, probs, k=3))
    assert m["top_1"] <= m["top_3"] <= m["top_5"] <= 1
    assert sum(b["count"] for b in m["calibration"]) == 500 and 0 <= m["ece"] < 1
    # a model that is always right with full confidence is perfectly calibrated
    sure = np.eye(6)[y]
    assert calibration(y, sure)["ece"] == pytest.approx(0.0)
    # ... and one always 90% sure but right half the time is off by 0.4
    half = np.full((500, 6), 0.02)
    half[np.arange(500), np.where(np.arange(500) % 2 == 0, y, (y + 1) % 6)] = 0.9
    assert calibration(y, half)["ece"] == pytest.approx(0.4, abs=0.01)
    cm = np.array([[5, 3, 0], [1, 7, 4], [0, 0, 9]])
    assert most_confused(cm, ["x", "y", "z"], n=2) == [
        {"true": "y", "predicted": "z", "count": 4}, {"true": "x", "predicted": "y", "count": 3}]
    curves = averaged_roc(y, probs)
    assert curves["micro"][2] == pytest.approx(m["roc_auc_micro"])
    assert abs(curves["macro"][2] - m["roc_auc_macro"]) < 0.01
    assert m["average_precision_macro"] > 1 / 6  # better than a random ranking


def test_a_threshold_is_tuned_only_on_enough_images_and_comes_with_its_spread():
    from imclass.metrics import MIN_THRESHOLD_IMAGES, fit_threshold
    rng = np.random.default_rng(0)
    positives = np.arange(200) < 100
    score = np.clip(np.where(positives, 0.7, 0.3) + rng.normal(0, 0.15, 200), 0, 1)
    fit = fit_threshold(positives, score)
    assert fit.tuned and 0.3 < fit.value < 0.7 and (fit.positives, fit.negatives) == (100, 100)
    low, high = fit.spread
    assert low <= fit.value <= high and high - low < 0.3
    few = fit_threshold(positives[90:110], score[90:110])  # 10 positives, 10 negatives
    assert not few.tuned and few.value == 0.5 and few.spread is None
    assert f"fewer than {MIN_THRESHOLD_IMAGES} of each" in few.describe("dog")
    assert "bootstrap 10-90%" in fit.describe("dog")


def test_the_test_pass_keeps_the_embedding_figures_features_without_a_second_pass():
    from imclass.config import ModelConfig
    from imclass.data.batches import Batches, Normalization
    from imclass.data.images import ImageSet
    from imclass.interpret import embeddings
    from imclass.metrics import EmbeddingTap, predict_probabilities
    from imclass.models import build_model
    from imclass.tasks import get_task

    torch.manual_seed(0)
    images = torch.randint(0, 256, (50, 1, 12, 12), dtype=torch.uint8)
    data = ImageSet(images, torch.arange(50) % 3, ("a", "b", "c"))
    norm = Normalization.of(images)
    model = build_model(ModelConfig(widths=(4, 8), depths=(1, 1), dropout=0.5), 1, 3).eval()
    task, cpu = get_task("multiclass"), torch.device("cpu")
    rows = np.array([0, 7, 15, 16, 17, 31, 32, 49])  # across the batches of 16
    tap = EmbeddingTap(rows)
    probs, labels = predict_probabilities(model, Batches(data, 16, norm), task, cpu, tap=tap)
    plain, _ = predict_probabilities(model, Batches(data, 16, norm), task, cpu)
    assert np.array_equal(probs, plain) and np.array_equal(labels, data.labels.numpy())
    again = embeddings(model, Batches(data.take(torch.as_tensor(rows)), 16, norm))
    assert tap.features.shape == (len(rows), 8)
    assert np.allclose(tap.features, again, atol=1e-5)


def test_the_test_pass_averages_the_same_views_as_the_runs_pixel_model():
    """--tta and --tta-shift: the training process's test pass (normalised batches) and the
    PixelModel every caller predicts with (uint8 pixels, exported to ONNX) average the same
    ten views: moved 0 or 1 px, each with its mirror image, the border black in both."""
    from imclass.config import ModelConfig
    from imclass.contract import Contract
    from imclass.data.batches import Batches, Normalization
    from imclass.data.images import ImageSet
    from imclass.metrics import predict_probabilities
    from imclass.models import build_model
    from imclass.pixel_model import PixelModel
    from imclass.tasks import get_task

    torch.manual_seed(0)
    images = torch.randint(0, 256, (40, 1, 12, 12), dtype=torch.uint8)
    data = ImageSet(images, torch.arange(40) % 3, ("a", "b", "c"))
    norm = Normalization.of(images)
    model = build_model(ModelConfig(widths=(4, 8), depths=(1, 1), dropout=0.5), 1, 3).eval()
    contract = Contract(class_names=("a", "b", "c"), task="multiclass", thresholds=None,
                        hierarchy_sep="/", input_channels=1, input_size=12, decoded_size=12,
                        fit="squash", interpolation="bilinear", mean=norm.mean, std=norm.std,
                        flips=(-1,), shift=1)
    task, cpu = get_task("multiclass"), torch.device("cpu")
    views, _ = predict_probabilities(model, Batches(data, 16, norm), task, cpu, flips=(-1,),
                                     shift=1)
    with torch.no_grad():
        expected = PixelModel(model, contract)(images).numpy()
    assert np.allclose(views, expected, atol=1e-5)
    plain, _ = predict_probabilities(model, Batches(data, 16, norm), task, cpu, flips=(-1,))
    assert not np.allclose(views, plain, atol=1e-3)
