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


def test_a_failed_write_leaves_no_file_behind(tmp_path):
    def fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "x.safetensors", fail)
    assert list(tmp_path.iterdir()) == []
