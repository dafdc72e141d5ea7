"""imclass tune: search spaces, samplers, pruning, outputs, resuming a killed study."""
import contextlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid

import numpy as np
import optuna
import pytest

from imclass import cli
from imclass.commands import tune
from imclass.config import RunConfig, load_yaml, override
from imclass.errors import ConfigError

TINY = ["--subset", "300", "--epochs", "2", "--batch-size", "32"]


def test_space_errors_name_the_key_and_what_is_allowed():
    base = RunConfig()
    with pytest.raises(ConfigError, match="did you mean 'dropout'"):
        tune.parse_space({"dropuot": [0.1]}, base)
    with pytest.raises(ConfigError, match="low .* must be below high"):
        tune.parse_space({"lr": {"low": 0.5, "high": 0.1}}, base)
    with pytest.raises(ConfigError, match="log range needs low > 0"):
        tune.parse_space({"weight_decay": {"low": 0, "high": 0.1, "log": True}}, base)
    with pytest.raises(ConfigError, match=r"'dropout' must be in \[0, 1\)"):
        tune.parse_space({"dropout": [0.2, 1.5]}, base)
    with pytest.raises(ConfigError, match="type must be int or float; got 'bool'"):
        tune.parse_space({"epochs": {"low": 1, "high": 3, "type": "bool"}}, base)
    with pytest.raises(ConfigError, match="needs a list of choices for 'lr'"):
        tune.grid_of(tune.parse_space({"lr": {"low": 0.01, "high": 0.1}}, base))


@pytest.mark.parametrize("method", ["random", "tpe"])
def test_samplers_respect_ranges_and_log_scale(method):
    params = tune.parse_space({"lr": {"low": 1e-4, "high": 1.0, "log": True},
                               "epochs": {"low": 2, "high": 5},
                               "optimizer": ["sgd", "adamw"], "widths": [[8, 16, 32, 64]]},
                              override(RunConfig(), {"depths": "1,1,1,1"}))
    study = optuna.create_study(sampler=tune.make_sampler(method, params, seed=0),
                                direction="maximize")
    lrs, epochs = [], []
    for _ in range(60):
        trial = study.ask()
        values = {p.key: tune.suggest(trial, p) for p in params}
        assert values["optimizer"] in ("sgd", "adamw") and values["widths"] == (8, 16, 32, 64)
        lrs.append(values["lr"])
        epochs.append(values["epochs"])
        study.tell(trial, -abs(math.log10(values["lr"]) + 2))  # best near lr = 0.01
    assert all(1e-4 <= v <= 1.0 for v in lrs) and set(epochs) <= {2, 3, 4, 5}
    assert all(isinstance(e, int) for e in epochs)
    # log scale: about a quarter of the draws fall in each decade, not 90% in the top one
    assert np.mean(np.array(lrs[:20]) < 1e-2) > 0.2


def grid_points(db):
    study = optuna.load_study(study_name=db.parent.name, storage=f"sqlite:///{db}")
    done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    return study, sorted((t.params["lr"], t.params["dropout"]) for t in done)


def finished_count(db) -> int:
    """Trials finished so far, read through a read-only sqlite connection; 0 while the worker
    has not yet created the file or its tables. Not through Optuna: its RDBStorage creates the
    tables and writes a version row itself, racing the worker that is creating them (CI once
    saw that worker die, and the study never appeared)."""
    if not db.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            return conn.execute("SELECT COUNT(*) FROM trials "
                                "WHERE state IN ('COMPLETE', 'PRUNED')").fetchone()[0]
    except sqlite3.OperationalError:  # no tables yet, or the worker holds a write lock
        return 0


def grid_search(tmp_path, name: str, space: str, trials: int, *flags: str):
    """imclass tune over a grid (no pruning, quiet) into tmp_path/name; returns that folder."""
    (tmp_path / "space.yaml").write_text(space)
    out = tmp_path / name
    assert cli.main(["tune", "--space", str(tmp_path / "space.yaml"), "--method", "grid",
                     "--trials", str(trials), "--pruner", "none", "--out", str(out),
                     "--quiet", *flags]) == 0
    return out


@pytest.mark.slow
def test_a_two_by_two_grid_runs_four_trials_and_picks_the_best(tmp_path, capsys):
    out = grid_search(tmp_path, "grid", "lr: [0.05, 0.2]\ndropout: [0.0, 0.3]\n", 10, *TINY)
    study, points = grid_points(out / "study.db")
    assert points == [(0.05, 0.0), (0.05, 0.3), (0.2, 0.0), (0.2, 0.3)]
    best = max((t for t in study.trials if t.value is not None), key=lambda t: t.value)
    assert study.best_trial.number == best.number
    cfg = load_yaml(out / "best.yaml")
    assert (cfg.train.lr, cfg.model.dropout) == (best.params["lr"], best.params["dropout"])
    assert cfg.data.subset == 300  # the fixed flags are kept
    rows = (out / "trials.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("trial,state,val_acc,seconds")
    assert {"history.png", "parallel.png"} <= {p.name for p in (out / "plots").iterdir()}
    html = (out / "study.html").read_text()
    assert "test set" in html and "validation figures only" in html
    assert "test" not in (out / "trials" / "trial-000" / "metrics.json").read_text()
    assert "final run of the best config, test accuracy" in capsys.readouterr().out


def test_a_trial_killed_before_its_first_heartbeat_is_failed_and_queued_again(tmp_path):
    """A worker killed between creating a trial and its first heartbeat left the trial
    running for ever (Optuna judges only trials with a heartbeat), and a resumed grid never
    ran its point. Silent past the grace period now counts as dead; a trial that beats, or
    one younger than the grace period, is left to its worker."""
    storage = tune.open_storage(f"sqlite:///{tmp_path / 'study.db'}", 1)  # grace: 3 s
    study = optuna.create_study(storage=storage, study_name="s")
    silent, beating = study.ask({"lr": optuna.distributions.FloatDistribution(0.01, 0.1)}), \
        study.ask({"lr": optuna.distributions.FloatDistribution(0.01, 0.1)})
    time.sleep(3.3)
    storage.record_heartbeat(beating._trial_id)
    young = study.ask()
    optuna.storages.fail_stale_trials(study)
    states = {t._trial_id: t.state.name for t in study.get_trials(deepcopy=False)}
    assert states[silent._trial_id] == "FAIL"
    assert states[beating._trial_id] == "RUNNING" and states[young._trial_id] == "RUNNING"
    queued = [t for t in study.get_trials(deepcopy=False) if t.state.name == "WAITING"]
    assert [t.params for t in queued] == [silent.params]  # its point, to run again


@pytest.mark.slow
def test_a_killed_study_resumes_without_repeating_finished_trials(tmp_path):
    (tmp_path / "space.yaml").write_text("lr: [0.05, 0.1, 0.2]\ndropout: [0.0, 0.3]\n")
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "imclass", "tune", "--space", str(tmp_path / "space.yaml"),
               "--method", "grid", "--trials", "6", "--pruner", "none", "--out", str(out),
               "--heartbeat", "1", "--no-final-run", "--quiet", *TINY]
    log = tmp_path / "worker.log"
    with log.open("w") as stderr:
        worker = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.time() + 300  # a loaded machine: two tiny trials take 20 s when quiet
    while time.time() < deadline and finished_count(out / "study.db") < 2:
        assert worker.poll() is None, f"the worker exited early:\n{log.read_text()}"
        time.sleep(0.5)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    study, before = grid_points(out / "study.db")
    finished_before = {t.number: t.params for t in study.trials
                       if t.state.name in ("COMPLETE", "PRUNED")}
    assert 2 <= len(finished_before) < 6
    time.sleep(3.5)  # past the killed trial's grace period (3 missed heartbeats)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    study, after = grid_points(out / "study.db")
    assert len(after) == 6 and len(set(after)) == 6, "every grid point exactly once"
    for number, params in finished_before.items():  # the finished ones were not run again
        assert study.trials[number].params == params
        assert study.trials[number].state.name in ("COMPLETE", "PRUNED")


def storage_url(kind: str, out) -> str:
    if kind == "sqlite":
        return f"sqlite:///{out / 'study.db'}"
    url = os.environ.get("IMCLASS_TEST_POSTGRES")
    assert url, ("IMCLASS_TEST_POSTGRES is unset: `make test` starts a PostgreSQL server on "
                 "loopback and sets it")
    return url


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_two_workers_share_one_grid_without_duplicates(tmp_path, kind):
    (tmp_path / "space.yaml").write_text("lr: [0.05, 0.1, 0.2]\ndropout: [0.0, 0.3]\n")
    out = tmp_path / f"shared-{uuid.uuid4().hex[:8]}"  # the study's name: unique on a server
    out.mkdir()
    url = storage_url(kind, out)
    command = [sys.executable, "-m", "imclass", "tune", "--space", str(tmp_path / "space.yaml"),
               "--method", "grid", "--trials", "6", "--pruner", "none", "--out", str(out),
               "--storage", url, "--no-final-run", "--quiet", *TINY]
    # create the study first so both workers open the same one
    optuna.create_study(study_name=out.name, storage=url, direction="maximize")
    workers = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
               for _ in range(2)]
    for w in workers:
        assert w.wait(timeout=300) == 0, w.stderr.read().decode()[-2000:]
    study = optuna.load_study(study_name=out.name, storage=url)
    done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    points = sorted((t.params["lr"], t.params["dropout"]) for t in done)
    assert len(points) == 6 and len(set(points)) == 6, points
    assert {t.user_attrs["run_dir"] for t in done} == {
        str(p) for p in (out / "trials").iterdir()}, "each trial wrote its own run folder"


@pytest.mark.slow
def test_trials_are_scored_by_the_select_metric(tmp_path, capsys):
    out = grid_search(tmp_path, "f1", "lr: [0.05, 0.2]\n", 2, "--no-final-run",
                      "--select-metric", "macro-f1", *TINY)
    assert "validation macro-f1" in capsys.readouterr().out
    study = optuna.load_study(study_name=out.name, storage=f"sqlite:///{out / 'study.db'}")
    for t in study.trials:  # each trial's value: its best epoch's validation macro F1
        import json
        validation = json.loads((tmp_path / t.user_attrs["run_dir"] / "metrics.json")
                                .read_text())["validation"]
        assert t.value == validation["val_macro_f1"] != validation["val_acc"]
    assert (out / "trials.csv").read_text().startswith("trial,state,val macro-f1,seconds")
    assert load_yaml(out / "best.yaml").train.select_metric == "macro-f1"


@pytest.mark.slow
def test_best_yaml_holds_the_recipes_choices_and_trains_the_trials_config(tmp_path):
    from imagedata import folder_dataset
    from imclass.config import to_dict
    root = folder_dataset(tmp_path / "shop", n_train=10, n_test=4)
    out = grid_search(tmp_path, "study", "lr: [0.001]\n", 1, "--no-final-run", "--data",
                      str(root), "--epochs", "2", "--cache-dir", str(tmp_path / "cache"))
    trial = load_yaml(out / "trials" / "trial-000" / "config.yaml")
    best = load_yaml(out / "best.yaml")
    # what the folder recipe chose, not the plain defaults (cnn, sgd, fashion, no freezing)
    assert (best.model.name, best.model.pretrained, best.train.optimizer) == \
        ("efficientnet_lite0", True, "adamw")
    assert best.train.freeze_epochs == 1 and best.train.lr == 0.001
    # a set this small trains on every image by the recipe, but trials are ranked on validation
    assert trial.data.val_fraction == 0.2
    trial_metrics = json.loads((out / "trials" / "trial-000" / "metrics.json").read_text())
    assert trial_metrics["validation"]["val_score"] > 0
    assert to_dict(best) == to_dict(trial)
    again = tmp_path / "again"
    assert cli.main(["train", "--config", str(out / "best.yaml"), "--out", str(again),
                     "--quiet"]) == 0
    assert to_dict(load_yaml(again / "config.yaml")) == to_dict(trial)
