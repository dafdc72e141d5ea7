"""A short real training on Fashion-MNIST, and everything it leaves in the run folder."""
import csv
import json

import pytest
import yaml
from PIL import Image

import imclass
from imclass.errors import DataError
from imclass import cli
from imclass.config import RunConfig, override

pytestmark = pytest.mark.slow


def test_training_far_beats_chance(trained_run):
    both = json.loads((trained_run / "metrics.json").read_text())
    assert both["validation"]["val_acc"] > 0.7 and 1 <= both["validation"]["epoch"] <= 6
    metrics = both["test"]
    assert metrics["accuracy"] > 0.7, "10 classes: chance is 0.1"
    assert metrics["roc_auc_macro"] > 0.9
    assert len(metrics["confusion_matrix"]) == 10 and len(metrics["per_class"]) == 10
    assert sum(map(sum, metrics["confusion_matrix"])) == 10_000


def test_run_folder_holds_everything_a_user_needs(trained_run):
    names = {p.relative_to(trained_run).as_posix() for p in trained_run.rglob("*") if p.is_file()}
    expected = {"config.yaml", "history.csv", "metrics.json", "run.json", "report.html",
                "checkpoints/best.safetensors", "checkpoints/best.json",
                "checkpoints/last.safetensors", "checkpoints/last.json",
                "plots/curves.png", "plots/confusion.png", "plots/confusion_normalized.png",
                "plots/roc.png", "plots/predictions.png", "plots/augmented.png", "plots/pr.png",
                "plots/calibration.png", "plots/mistakes.png", "plots/unsure.png",
                "plots/gradcam.png", "plots/embedding.png"}
    assert expected <= names
    assert not [n for n in names if n.endswith(".tmp")]
    for png in (trained_run / "plots").glob("*.png"):
        with Image.open(png) as img:
            assert img.size[0] > 300 and img.size[1] > 200


def test_history_has_one_row_per_epoch(trained_run):
    rows = list(csv.DictReader((trained_run / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert set(rows[0]) >= {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])


def test_saved_config_reproduces_the_run_config(trained_run):
    saved = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert saved["data"]["subset"] == 1200 and saved["train"]["epochs"] == 6
    assert saved["augment"]["hflip_p"] == 0.5  # the preset, resolved
    sidecar = json.loads((trained_run / "checkpoints" / "best.json").read_text())
    assert sidecar["config"] == saved and sidecar["task"] == "multiclass"
    assert sidecar["input"] == {"channels": 1, "height": 28, "width": 28, "decoded": 28,
                                "fit": "squash"}
    assert len(sidecar["normalization"]["mean"]) == 1 and len(sidecar["class_names"]) == 10
    assert set(sidecar["versions"]) >= {"imclass", "torch", "python"}


def test_report_is_self_contained(trained_run):
    html = (trained_run / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(list((trained_run / "plots").glob("*.png")))
    assert html.count("data:image/png;base64,") == 12
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert "Ankle boot" in html and "Per class" in html and "pytest" in html


def test_evaluate_reproduces_the_test_metrics(trained_run, capsys):
    before = json.loads((trained_run / "metrics.json").read_text())["test"]
    assert cli.main(["evaluate", str(trained_run), "--quiet", "--tta", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["plain"]["accuracy"] == pytest.approx(before["accuracy"])
    after = json.loads((trained_run / "metrics.json").read_text())
    assert after["test"]["accuracy"] == pytest.approx(before["accuracy"])
    tta = after["test_tta"]
    assert tta["count"] == 10_000 and abs(tta["accuracy"] - before["accuracy"]) < 0.05
    assert tta["accuracy"] != before["accuracy"], "flip TTA changes some predictions"


def test_predict_names_the_class_of_a_test_image(trained_run, tmp_path, capsys):
    from imclass.data import fashion_mnist
    _, test = fashion_mnist.load()
    label = int(test.labels[0])
    Image.fromarray(test.images[0, 0].numpy()).save(tmp_path / "item.png")
    assert cli.main(["predict", str(trained_run), str(tmp_path / "item.png"), "--json",
                     "--top-k", "3"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    probs = [t["probability"] for t in result["top"]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    api_top = imclass.predict(trained_run, [tmp_path / "item.png"], top_k=10)[0]["top"]
    assert {t["class"] for t in api_top} == set(fashion_mnist.CLASS_NAMES)
    assert test.class_names[label] in [t["class"] for t in api_top[:5]]


def test_an_existing_run_is_not_overwritten_by_accident(trained_run, capsys):
    assert cli.main(["train", "--out", str(trained_run), "--epochs", "1"]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_same_seed_same_numbers(tmp_path):
    cfg = override(RunConfig(), {"subset": 300, "epochs": 2, "batch_size": 32, "augment": "strong"})
    a = imclass.train(cfg, tmp_path / "a", quiet=True)
    b = imclass.train(cfg, tmp_path / "b", quiet=True)

    def numbers(run):
        rows = list(csv.DictReader((run / "history.csv").open()))
        return [(r["train_loss"], r["val_loss"], r["val_acc"]) for r in rows]
    assert numbers(a) == numbers(b)
    test_a, test_b = (json.loads((r / "metrics.json").read_text())["test"] for r in (a, b))
    assert test_a == test_b


def test_evaluate_on_another_folder_and_on_validation(trained_run, tiny_idx_dir, tmp_path,
                                                      monkeypatch):
    import gzip
    import hashlib
    import shutil
    from imclass.data import fashion_mnist
    run = tmp_path / "copy"
    shutil.copytree(trained_run, run)
    for name in fashion_mnist.FILES.values():  # the tiny files are not the official ones
        digest = hashlib.md5(gzip.open(tiny_idx_dir / name).read()).hexdigest()
        monkeypatch.setitem(fashion_mnist.RAW_MD5, name, digest)
    result = imclass.evaluate(run, data_dir=tiny_idx_dir, quiet=True)
    monkeypatch.undo()
    assert result["plain"]["count"] == 20 and result["plain"]["source"] == str(tiny_idx_dir)
    val = imclass.evaluate(run, split="val", quiet=True)["plain"]
    saved = json.loads((run / "metrics.json").read_text())
    assert val["count"] == 240 and saved["val"]["count"] == 240 and saved["test"]["count"] == 20
    assert (run / "plots" / "val" / "confusion.png").is_file()


def test_evaluate_refuses_data_with_other_classes(trained_run, tmp_path):
    import shutil
    run = tmp_path / "copy"
    shutil.copytree(trained_run, run)
    for name in ("best.json",):
        sidecar = json.loads((run / "checkpoints" / name).read_text())
        sidecar["class_names"] = [f"class {i}" for i in range(10)]
        (run / "checkpoints" / name).write_text(json.dumps(sidecar))
    with pytest.raises(DataError, match="differ from the run's"):
        imclass.evaluate(run, quiet=True)


def test_compare_lists_figures_and_the_config_that_differs(trained_run, tmp_path, capsys):
    import shutil
    other = tmp_path / "other"
    shutil.copytree(trained_run, other)
    config = yaml.safe_load((other / "config.yaml").read_text())
    config["train"]["lr"] = 0.05
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    assert cli.main(["compare", str(trained_run), str(other), "--out",
                     str(tmp_path / "cmp.html")]) == 0
    out = capsys.readouterr().out
    assert "train.lr" in out and "0.05" in out and "train.epochs" not in out
    assert "test accuracy" in out and "small" in out and "other" in out
    assert "test balanced accuracy" in out and "parameters" in out
    assert "positive class" not in out  # no binary run: no binary F1 column
    html = (tmp_path / "cmp.html").read_text()
    assert html.count("data:image/png;base64,") == 1 and "train.lr" in html
    assert not (tmp_path / "cmp.png").exists()
    code = cli.main(["compare", str(trained_run), str(tmp_path / "nothing")])
    assert code == 2 and "not a finished imclass run" in capsys.readouterr().err


def test_train_without_the_test_set_and_with_extra_callbacks(tmp_path):
    seen = []
    cfg = override(RunConfig(), {"subset": 300, "epochs": 2, "batch_size": 32})
    run = imclass.train(cfg, tmp_path / "trial", quiet=True, evaluate_test=False,
                        callbacks=[lambda event, info: seen.append((event, info.get("epoch")))])
    assert [e for e in seen if e[0] == "epoch_end"] == [("epoch_end", 1), ("epoch_end", 2)]
    metrics = json.loads((run / "metrics.json").read_text())
    assert "test" not in metrics and metrics["validation"]["epoch"] in (1, 2)
    assert "Not evaluated" in (run / "report.html").read_text()
    assert not (run / "plots" / "confusion.png").exists()
