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
