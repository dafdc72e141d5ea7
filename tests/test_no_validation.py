"""--val-fraction 0: training on every training image, with no validation split. The last
epoch is kept; what needs validation (early stopping, overfitting warnings, thresholds, a
search's ranking, evaluate --split val) is skipped with a note or refused with a sentence."""
import json
import math

import pytest
import torch

from imagedata import csv_dataset
from imclass import cli
from imclass.atomic import json_text
from imclass.checkpoint import load as load_checkpoint
from imclass.commands.tune import Param, check_validated, run_study
from imclass.config import RunConfig, TrainConfig, override
from imclass.data.batches import Batches
from imclass.errors import ConfigError
from imclass.runfolder import read_history
from imclass.tasks import get_task
from imclass.training import EarlyStopping, fit, make_schedule
from test_train_loop import tiny_problem


def strict_json(path):
    """Parsed as a browser would: NaN or Infinity is an error, not a number."""
    def refuse(constant):
        raise ValueError(f"{path} holds {constant}, which is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_fit_without_validation_keeps_the_last_epoch_and_never_stops_early():
    cfg = TrainConfig(epochs=4, lr=3.0, schedule="constant", patience=1)
    torch.manual_seed(0)
    data, norm = tiny_problem()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    train = Batches(data, 16, norm, shuffle=True, seed=0, channels_last=False)
    loss = get_task("multiclass").loss(cfg.loss, cfg.label_smoothing)
    weights = []
    result = fit(model, train, None, loss, cfg, torch.device("cpu"), [
        EarlyStopping(cfg.patience),
        lambda event, info: weights.append(model[1].weight.clone()) if event == "epoch_end"
        else None])
    assert len(result.history) == 4 and not result.stopped_early  # patience 1 never fired
    assert result.best_epoch == 4
    assert all(math.isnan(h["val_loss"]) and math.isnan(h["val_acc"]) for h in result.history)
    assert all(h["improved"] and h["epochs_since_best"] == 0 for h in result.history)
    assert torch.equal(model[1].weight, weights[-1]) and not torch.equal(weights[-1], weights[0])


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 8])
def test_a_one_cycle_schedule_of_a_few_steps_runs_and_ends_low(steps):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = make_schedule(optimizer, TrainConfig(schedule="onecycle"), steps)  # 4: 1 warm-up step
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert max(rates) <= 0.1 + 1e-9
    assert steps == 1 or rates[-1] < 0.01


def test_json_of_a_run_without_validation_writes_null_not_nan():
    text = json_text({"val_loss": math.nan, "nested": [math.inf, 1.5], "n": 3})
    assert json.loads(text) == {"val_loss": None, "nested": [None, 1.5], "n": 3}


@pytest.mark.slow
def test_training_on_every_image_end_to_end(tmp_path, capsys, monkeypatch):
    out = tmp_path / "all"
    assert cli.main(["train", "--subset", "300", "--epochs", "2", "--batch-size", "64",
                     "--val-fraction", "0", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "300 train / 0 validation" in err and "no validation (--val-fraction 0)" in err
    run = strict_json(out / "run.json")
    assert run["best_epoch"] == 2 and run["validation"]["val_acc"] is None
    assert sum(run["data"]["counts"]["train"].values()) == 300
    assert strict_json(out / "metrics.json")["test"]["count"] == 10_000
    history = read_history(out)
    assert len(history) == 2 and all(math.isnan(h["val_loss"]) for h in history)
    _, best = load_checkpoint(out / "checkpoints" / "best")
    _, last = load_checkpoint(out / "checkpoints" / "last")
    assert best["weights_sha256"] == last["weights_sha256"]  # the last epoch is the one kept
    strict_json(out / "checkpoints" / "best.json")
    html = (out / "report.html").read_text()
    assert "No validation split: the model trained on every training image" in html
    assert "none held out" in html and "there was no validation to choose by" in html
    assert (out / "plots" / "curves.png").is_file()
    from imclass.commands import export
    calibrated = []
    real_quantize = export.quantize_file
    monkeypatch.setattr(export, "quantize_file", lambda fp32, dest, images: (
        calibrated.append(len(images)), real_quantize(fp32, dest, images))[1])
    assert cli.main(["export", str(out), "--int8", "--out", str(tmp_path / "m.onnx")]) == 0
    assert calibrated == [300] and (tmp_path / "m.onnx").is_file()  # all 300 training images
    capsys.readouterr()
    assert cli.main(["evaluate", str(out), "--split", "val"]) == 2
    message = capsys.readouterr().err.strip()
    assert "no validation split to evaluate; use --split test" in message
    assert len(message.splitlines()) == 1


@pytest.mark.slow
def test_a_binary_run_without_validation_keeps_the_threshold_at_a_half(tmp_path, capsys):
    root = csv_dataset(tmp_path / "cats", "binary", n_train=40, n_test=12)
    out = tmp_path / "run"
    assert cli.main(["train", "--data", str(root), "--out", str(out), "--cache-dir",
                     str(tmp_path / "cache"), "--model", "cnn", "--epochs", "3",
                     "--batch-size", "16", "--val-fraction", "0", "--quiet"]) == 0
    test = strict_json(out / "metrics.json")["test"]
    assert test["task"] == "binary" and test["threshold"] == 0.5
    _, meta = load_checkpoint(out / "checkpoints" / "best")
    assert meta.get("thresholds") is None
    assert sum(strict_json(out / "run.json")["data"]["counts"]["train"].values()) == 40


def test_early_stopping_asked_for_without_validation_is_refused_before_any_run(tmp_path, capsys):
    out = tmp_path / "never"
    assert cli.main(["train", "--subset", "300", "--val-fraction", "0", "--patience", "3",
                     "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--patience 3 stops on validation loss" in err and "--val-fraction" in err
    assert not out.exists()


def test_a_search_needs_validation_unless_the_folder_has_its_own(tmp_path):
    base = override(RunConfig(), {"val_fraction": 0.0})
    with pytest.raises(ConfigError, match="ranks its trials by validation accuracy"):
        run_study(base, [Param("lr", choices=(0.1, 0.2))], tmp_path / "study", trials=1)
    assert not (tmp_path / "study" / "trials").exists()
    searched = [Param("val_fraction", choices=(0.0, 0.2))]
    with pytest.raises(ConfigError, match="--val-fraction 0 holds no images out"):
        check_validated(RunConfig(), searched)
    own = csv_dataset(tmp_path / "own", "binary", n_train=10, n_test=4)
    (own / "val").mkdir()
    check_validated(override(RunConfig(), {"source": str(own), "val_fraction": 0.0}), searched)


def test_without_validation_the_weights_are_written_paced_and_the_last_at_the_end(
        tmp_path, monkeypatch):
    """Every epoch is the best and the last: `best` (linked as `last`) is written when its
    Pace says (a fake clock: 10 s epochs, 1 s writes, so every fifth); a run stopped by a
    signal gets its last finished epoch's at train_end, from the weights fit ends with, and
    one that ends as planned at final_epoch, before its resume state says it finished."""
    import copy
    import time

    from imclass import runfolder

    clock, written = {"now": 0.0}, []
    monkeypatch.setattr(time, "monotonic", lambda: clock["now"])
    real_save = runfolder.checkpoint.save

    def save(stem, weights, meta, also=None):
        clock["now"] += 1.0
        written.append(meta["metrics"]["epoch"])
        real_save(stem, weights, meta, also)
    monkeypatch.setattr(runfolder.checkpoint, "save", save)
    model = torch.nn.Linear(2, 2)
    checkpointer = runfolder.Checkpointer(tmp_path, model, {"run": "test"}, validated=False)
    for epoch in range(1, 9):
        clock["now"] += 10.0
        with torch.no_grad():
            model.weight.fill_(epoch)
        checkpointer("epoch_end", {"epoch": epoch, "train_loss": 1.0, "train_acc": 0.5,
                                   "val_loss": math.nan, "val_acc": math.nan, "improved": True})
    assert written == [1, 6]
    finished = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        model.weight.fill_(9)  # a ninth epoch cut short by Ctrl-C: not kept
    checkpointer("train_end", {"best_weights": finished})
    assert written == [1, 6, 8]
    weights, best = load_checkpoint(tmp_path / "best")
    _, last = load_checkpoint(tmp_path / "last")
    assert best["metrics"]["epoch"] == last["metrics"]["epoch"] == 8
    assert torch.all(weights["weight"] == 8)

    clock["now"] += 10.0
    checkpointer("epoch_end", {"epoch": 9, "train_loss": 1.0, "train_acc": 0.5,
                               "val_loss": math.nan, "val_acc": math.nan, "improved": True})
    assert written == [1, 6, 8]  # 10 s after a write of 1 s
    checkpointer("final_epoch", {"epoch": 9})
    checkpointer("train_end", {"best_weights": copy.deepcopy(model.state_dict())})
    assert written == [1, 6, 8, 9]
    weights, best = load_checkpoint(tmp_path / "best")
    assert best["metrics"]["epoch"] == 9 and torch.all(weights["weight"] == 9)
