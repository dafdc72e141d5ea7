import json

from imclass.report import build_report


def test_report_shows_warnings_config_and_escapes_text(tmp_path):
    (tmp_path / "plots").mkdir()
    run = {"overfitting": [{"epoch": 7, "message": "possible overfitting at epoch 7"}],
           "data": {"source": "<fashion>", "classes": ["a", "b"], "channels": 1, "size": [28, 28],
                    "counts": {"train": {"a": 3, "b": 4}, "val": {"a": 1, "b": 1},
                               "test": {"a": 2, "b": 2}}},
           "model": {"name": "cnn", "parameters": 1234, "flops_per_image": 2e6},
           "validation": {"val_acc": 0.9}, "best_epoch": 5, "epochs_run": 8, "stopped_early": True}
    (tmp_path / "run.json").write_text(json.dumps(run))
    (tmp_path / "config.yaml").write_text("train:\n  lr: 0.2\n")
    html = build_report(tmp_path)
    assert "possible overfitting at epoch 7" in html and "stopped early" in html
    assert "&lt;fashion&gt;" in html and "<fashion>" not in html
    assert "lr: 0.2" in html and "1,234 parameters" in html
    assert "<td>total</td><td>7</td><td>2</td><td>4</td>" in html
    assert "Not evaluated" in html  # no metrics.json yet


def test_report_says_when_training_ran_in_bf16(tmp_path):
    (tmp_path / "plots").mkdir()
    (tmp_path / "config.yaml").write_text("train:\n  lr: 0.2\n")
    run = {"data": {"source": "x", "classes": ["a", "b"]}, "model": {"name": "cnn"},
           "hardware": "Some CPU, 2 threads", "best_epoch": 1, "epochs_run": 1}
    for precision, shown in (("bf16 mixed precision", True), ("fp32", False), (None, False)):
        (tmp_path / "run.json").write_text(json.dumps({**run, "precision": precision}))
        html = build_report(tmp_path)
        assert ("Some CPU, 2 threads, in bf16 mixed precision" in html) is shown
        assert "Some CPU, 2 threads" in html


def test_report_lists_classes_lowest_recall_first_with_their_counts(tmp_path):
    (tmp_path / "plots").mkdir()
    (tmp_path / "config.yaml").write_text("train:\n  lr: 0.2\n")
    run = {"data": {"source": "x", "classes": ["ok", "rare"],
                    "counts": {"train": {"ok": 400, "rare": 40}}},
           "model": {"name": "cnn"}, "best_epoch": 3, "epochs_run": 4,
           "select_metric": "balanced-accuracy",
           "balance": {"method": "sqrt", "ratio": 10.0, "counts": [400, 40]}}
    cls = {"precision": 0.9, "f1": 0.9, "auc": 0.95, "average_precision": 0.9}
    test = {"task": "multiclass", "accuracy": 0.9, "balanced_accuracy": 0.75,
            "per_class": {"ok": {**cls, "recall": 0.95, "support": 100},
                          "rare": {**cls, "recall": 0.55, "support": 10}}}
    (tmp_path / "run.json").write_text(json.dumps(run))
    (tmp_path / "metrics.json").write_text(json.dumps({"test": test}))
    html = build_report(tmp_path)
    table = html[html.index("Per class, lowest recall first"):]
    assert table.index("<td>rare</td>") < table.index("<td>ok</td>")
    assert "<td>rare</td><td>0.5500</td><td>0.9000</td><td>0.9000</td><td>10</td><td>40</td>" \
        in table
    assert "10.0x the training images" in html and "--balance sqrt" in html
    assert "the highest validation balanced-accuracy" in html
    assert "balanced accuracy (mean recall of the classes)" in html


def test_report_says_where_the_validation_images_came_from(tmp_path):
    import shutil

    from imagedata import folder_dataset
    from imclass.config import DataConfig
    from imclass.data import prepare

    root = folder_dataset(tmp_path / "d", n_train=10, n_test=4)
    held = prepare(DataConfig(source=str(root), val_fraction=0.2), seed=0)
    other = folder_dataset(tmp_path / "other", n_train=1, n_test=4, seed=1)
    shutil.copytree(other / "test", root / "val")  # other images: none in two splits
    given = prepare(DataConfig(source=str(root), val_fraction=0.2), seed=0)
    assert not held.val_given and given.val_given
    assert len(given.val) == len(given.test) and len(given.train) > len(held.train)
    (tmp_path / "plots").mkdir()
    (tmp_path / "config.yaml").write_text("train:\n  lr: 0.2\n")
    pages = {}
    for name, splits in (("held", held), ("given", given)):
        run = {"data": splits.summary(), "model": {"name": "cnn"}, "best_epoch": 1}
        (tmp_path / "run.json").write_text(json.dumps(run))
        pages[name] = build_report(tmp_path)
    assert "held out from the training images (stratified)" in pages["held"]
    assert "dataset's own (its val/ folder)" not in pages["held"]
    assert "dataset's own (its val/ folder)" in pages["given"]
    assert "held out from the training images" not in pages["given"]
