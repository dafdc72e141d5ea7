"""Your own images end to end: each layout and each task through train, evaluate and predict,
with the task's own metrics, a broken image skipped and listed, the report per task."""
import json

import pytest

from imagedata import csv_dataset, folder_dataset
from imclass import api, cli
from imclass.checkpoint import load as load_checkpoint

# --model cnn: these tests are about layouts and tasks; the recipe (and its pretrained
# network) has tests of its own in test_recipe.py
FAST = ["--model", "cnn", "--epochs", "5", "--batch-size", "16", "--lr", "0.05", "--quiet"]


def train(root, out, tmp_path, *extra) -> dict:
    assert cli.main(["train", "--data", str(root), "--out", str(out), "--cache-dir",
                     str(tmp_path / "cache"), *FAST, *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_class_folders_multiclass_train_evaluate_predict(tmp_path, capsys):
    root = folder_dataset(tmp_path / "pets", "multiclass", n_train=20, n_test=8)
    out = tmp_path / "run"
    # 8 epochs (24 steps), not FAST's 5: at 15 steps seed 0 in fp32 ended with one class
    # unlearnt (66.7%; an AVX2 EPYC, 2026-12-06) where bf16 and seeds 1-2 reached 100%
    test = train(root, out, tmp_path, "--epochs", "8")["test"]
    assert test["task"] == "multiclass" and test["count"] == 24
    assert test["accuracy"] > 0.8  # the classes differ by colour: easy when the pipeline works
    run = json.loads((out / "run.json").read_text())
    assert run["data"]["channels"] == 3 and run["data"]["size"] == [20, 20]  # median edge
    assert (out / "analysis.json").is_file()
    capsys.readouterr()
    assert cli.main(["evaluate", str(out), "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["plain"]["accuracy"] == test["accuracy"]
    blue = sorted((root / "test" / "blue").iterdir())[0]
    assert api.predict(out, [blue])[0]["top"][0]["class"] == "blue"


@pytest.mark.slow
def test_binary_csv_threshold_tuned_on_validation_and_used_everywhere(tmp_path, capsys):
    root = csv_dataset(tmp_path / "cats", "binary", bom=True)
    out = tmp_path / "run"
    test = train(root, out, tmp_path)["test"]
    assert test["task"] == "binary" and test["positive_class"] == "dog"
    assert 0 < test["threshold"] < 1 and test["roc_auc"] > 0.9 and test["pr_auc"] > 0.9
    assert test["tp_at_threshold"] + test["fn_at_threshold"] == 12  # the dogs of the test set
    _, meta = load_checkpoint(out / "checkpoints" / "best")
    assert meta["thresholds"] == [test["threshold"]]
    dog = next(p for p in sorted((root / "test" / "images").iterdir())
               if f"{p.name},dog" in (root / "test" / "labels.csv").read_text())
    assert api.predict(out, [dog])[0]["decision"] == "dog"
    html = (out / "report.html").read_text()
    assert "Positive class: <b>dog</b>" in html and "decision threshold" in html
    # 12 validation images: too few to tune a threshold on, so 0.5, and the run says why
    fit = json.loads((out / "run.json").read_text())["threshold_fits"][0]
    assert fit["value"] == test["threshold"] == 0.5 and not fit["tuned"]
    assert "too few validation images to tune on" in html


@pytest.mark.slow
def test_multilabel_csv_metrics_thresholds_per_label_and_report(tmp_path):
    root = csv_dataset(tmp_path / "tags", "multilabel", n_train=90, n_test=30)
    out = tmp_path / "run"
    test = train(root, out, tmp_path)["test"]
    assert test["task"] == "multilabel" and len(test["thresholds"]) == 3
    for key in ("f1_micro", "f1_macro", "mean_average_precision", "hamming_loss",
                "subset_accuracy"):
        assert 0 <= test[key] <= 1, key
    assert test["mean_average_precision"] > 0.8 and test["hamming_loss"] < 0.25
    red = test["per_class"]["red"]
    assert red["tp"] + red["fn"] == red["support"] and red["auc"] is not None
    assert {"labels.png", "roc.png", "pr.png", "predictions.png", "label_confusion.png",
            "mistakes.png"} <= {p.name for p in (out / "plots").iterdir()}
    html = (out / "report.html").read_text()
    assert "Per label" in html and "Hamming loss" in html
    assert 'alt="confusion matrix per label"' in html and 'alt="confusion matrix"' not in html
    image = sorted((root / "test" / "images").iterdir())[0]
    predicted = api.predict(out, [image])[0]
    assert set(predicted["labels"]) <= {"red", "green", "blue"}


@pytest.mark.slow
def test_hierarchical_csv_paths_per_level_metrics_and_consistent_predictions(tmp_path):
    root = csv_dataset(tmp_path / "tree", "hierarchical", n_train=60, n_test=24)
    out = tmp_path / "run"
    test = train(root, out, tmp_path)["test"]
    assert test["task"] == "hierarchical"
    levels = test["per_level"]
    assert levels["1"]["nodes"] == 2 and levels["2"]["nodes"] == 4
    assert levels["1"]["accuracy"] >= levels["2"]["accuracy"]  # a parent is never harder
    assert 0 < test["hierarchical_f1"] <= 1
    leaf = next(p for p in sorted((root / "test" / "images").iterdir())
                if f"{p.name},cool/blue" in (root / "test" / "labels.csv").read_text())
    path = api.predict(out, [leaf])[0]["path"]
    assert [p["node"].count("/") for p in path] == [0, 1]
    assert path[1]["node"].startswith(path[0]["node"] + "/")
    assert path[0]["probability"] >= path[1]["probability"]
    assert "Per level of the tree" in (out / "report.html").read_text()


@pytest.mark.slow
def test_broken_image_and_no_test_folder_still_train(tmp_path):
    root = csv_dataset(tmp_path / "d", "multiclass", n_train=75, test=False)
    (root / "train" / "images" / "img0002.bmp").write_bytes(b"BM broken")
    out = tmp_path / "run"
    metrics = train(root, out, tmp_path)
    run = json.loads((out / "run.json").read_text())
    skipped = run["data"]["analysis"]["skipped"]
    assert [s["file"] for s in skipped] == ["images/img0002.bmp"]
    assert run["data"]["analysis"]["test_carved"]
    assert metrics["test"]["count"] + len(skipped) == 15  # 20% of 75 held out as test
    html = (out / "report.html").read_text()
    assert "could not be decoded" in html and "img0002.bmp" in html
    assert "held out from train/" in html
