"""--track tensorboard,mlflow: the event files read back with TensorBoard's own reader, and a
real MLflow server (SQLite backend, on loopback, started here) receiving runs that are read
back through MlflowClient; a server that is down costs one warning line."""
import csv
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from imclass import cli

pytestmark = pytest.mark.slow
QUICK = ["--subset", "600", "--epochs", "2", "--batch-size", "64", "--quiet"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen([str(mlflow), "server", "--backend-store-uri",
                             f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination",
                             str(folder / "artifacts"), "--host", "127.0.0.1", "--port",
                             str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, "mlflow server exited"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                break
        except OSError:
            assert time.monotonic() < deadline, "mlflow server did not start within 120 s"
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def history(run_dir: Path) -> list[dict]:
    with (run_dir / "history.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_tensorboard_event_files_hold_the_epochs_hparams_and_figures(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert cli.main(["train", *QUICK, "--out", str(out), "--track", "tensorboard"]) == 0
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"loss/train", "loss/val", "accuracy/val", "learning_rate",
            "images_per_s"} <= set(tags["scalars"])
    val = [e.value for e in events.Scalars("loss/val")]
    assert [e.step for e in events.Scalars("loss/val")] == [1, 2]
    assert val == pytest.approx([float(r["val_loss"]) for r in history(out)], rel=1e-4)
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert events.Scalars("test/accuracy")[0].value == pytest.approx(test["accuracy"])
    assert "figures/confusion" in tags["images"] and "figures/curves" in tags["images"]
    from tensorboard.plugins.hparams import plugin_data_pb2
    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert hparams["train.epochs"].number_value == 2
    assert hparams["model.name"].string_value == "cnn"


def test_an_mlflow_server_receives_params_metrics_artifacts_and_the_model(mlflow_server,
                                                                        tmp_path, capsys):
    import mlflow
    import numpy as np
    from mlflow import MlflowClient

    out = tmp_path / "run"
    assert cli.main(["train", *QUICK, "--out", str(out), "--track", "mlflow", "--mlflow-uri",
                     mlflow_server, "--mlflow-experiment", "pytest", "--lr", "0.05"]) == 0
    printed = capsys.readouterr()
    assert printed.out.strip().endswith("report.html") and "View run" not in printed.out
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("pytest")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["train.lr"] == "0.05" and run.data.params["data.subset"] == "600"
    assert run.data.tags["task"] == "multiclass" and run.data.tags["architecture"] == "cnn"
    val = client.get_metric_history(run.info.run_id, "accuracy_val")
    assert [m.step for m in val] == [1, 2]
    assert [m.value for m in val] == pytest.approx([float(r["val_acc"]) for r in history(out)],
                                                  rel=1e-4)  # history.csv keeps 6 digits
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert run.data.metrics["test_accuracy"] == pytest.approx(test["accuracy"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "metrics.json", "report.html", "model.onnx", "checkpoints"} <= \
        artifacts
    mlflow.set_tracking_uri(mlflow_server)
    (model,) = mlflow.search_logged_models(experiment_ids=[experiment.experiment_id],
                                          output_format="list")
    assert model.source_run_id == run.info.run_id
    served = mlflow.pyfunc.load_model(f"models:/{model.model_id}")  # what `models serve` runs
    probs = served.predict({"pixels": np.zeros((2, 1, 28, 28), np.uint8)})["probabilities"]
    assert probs.shape == (2, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_tune_trials_are_nested_runs_under_the_study(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    space = tmp_path / "space.yaml"
    space.write_text("lr: [0.05, 0.1]\n")
    assert cli.main(["tune", "--space", str(space), "--method", "grid", "--trials", "2",
                     "--out", str(tmp_path / "study"), "--pruner", "none", *QUICK,
                     "--track", "mlflow", "--mlflow-uri", uri]) == 0
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("imclass")
    runs = client.search_runs([experiment.experiment_id])
    (study,) = [r for r in runs if r.data.tags.get("imclass.study") == "study"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == study.info.run_id]
    assert len(children) == 3  # two trials and the final run of the best configuration
    assert {c.data.params["train.lr"] for c in children} == {"0.05", "0.1"}
    assert study.data.params["space.lr"] == "(0.05, 0.1)"
    assert list((tmp_path / "cwd").iterdir()) == [], "nothing written where the process runs"
    artifacts = tmp_path / "mlruns" / "artifacts"
    assert (artifacts / children[0].info.run_id / "artifacts" / "config.yaml").is_file()


def test_a_tracking_server_that_is_down_costs_one_warning_line(tmp_path, capsys):
    out = tmp_path / "run"
    down = f"http://127.0.0.1:{free_port()}"
    assert cli.main(["train", *QUICK, "--out", str(out), "--track", "mlflow",
                     "--mlflow-uri", down]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MLflow tracking stopped" in err, err
    assert "the training goes on" in err
    assert (out / "metrics.json").is_file() and (out / "report.html").is_file()


def test_an_unknown_tracker_is_refused_by_name(tmp_path, capsys):
    assert cli.main(["train", "--track", "wandb", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "unknown tracker 'wandb'" in err and "tensorboard, mlflow" in err
    assert not (tmp_path / "r").exists()


def wait_for_text(browser, *words: str, seconds: float = 90) -> str:
    """The page's text once every one of `words` is in it (a page fills its parts in from
    separate requests: TensorBoard's image cards can show before its scalar cards)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = browser.execute_script("return document.body ? document.body.innerText : ''")
        if all(w in text for w in words):
            return text
        time.sleep(1)
    missing = [w for w in words if w not in text]
    raise AssertionError(f"{missing} did not appear in the page within {seconds:.0f} s; it "
                         f"shows: {text[:1500]!r}")


def test_the_run_shows_in_the_mlflow_and_tensorboard_web_uis(mlflow_server, tmp_path,
                                                             browser):
    """What a user opens: MLflow's UI lists the run by name, TensorBoard's shows its curves."""
    from mlflow import MlflowClient

    out = tmp_path / "ui-check-run"
    assert cli.main(["train", *QUICK, "--out", str(out), "--track", "tensorboard,mlflow",
                     "--mlflow-uri", mlflow_server, "--mlflow-experiment", "ui-check"]) == 0
    experiment = MlflowClient(mlflow_server).get_experiment_by_name("ui-check")
    browser.get(f"{mlflow_server}/#/experiments/{experiment.experiment_id}/runs")
    wait_for_text(browser, "ui-check-run")
    port = free_port()
    board = subprocess.Popen([str(Path(sys.executable).parent / "tensorboard"), "--logdir",
                              str(out / "tensorboard"), "--host", "127.0.0.1", "--port",
                              str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "tensorboard did not start within 60 s"
                time.sleep(0.5)
        browser.get(f"http://127.0.0.1:{port}/#timeseries")
        figures = len(list((out / "plots").glob("*.png")))
        # every figure of the report, and the curves
        wait_for_text(browser, f"figures{figures} cards", "accuracy\n/val", "loss2 cards")
    finally:
        board.terminate()
        board.wait(timeout=30)


def test_mlflow_variables_are_honoured_and_flags_win(monkeypatch):
    def options(*flags):
        return cli._track_options(cli.build_parser().parse_args(
            ["train", "--track", "mlflow", *flags]))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    plain = options()
    assert plain.mlflow_uri == "sqlite:///mlruns/mlflow.db" and plain.experiment == "imclass"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:///tmp/x")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "shared")
    assert (options().mlflow_uri, options().experiment) == ("file:///tmp/x", "shared")
    flagged = options("--mlflow-uri", "sqlite:///other.db", "--mlflow-experiment", "mine")
    assert (flagged.mlflow_uri, flagged.experiment) == ("sqlite:///other.db", "mine")
