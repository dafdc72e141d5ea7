"""Hyperparameter search over any config key, on Optuna (samplers, pruners, storage).

A search space is a YAML mapping from config keys to a list of choices or a range:

    lr: {low: 0.01, high: 0.5, log: true}
    batch_size: [128, 256]
    dropout: {low: 0.0, high: 0.4}
    epochs: {low: 3, high: 8, type: int}

Trials are scored on validation accuracy only (never the test set) and are pruned from the
per-epoch validation accuracy through the training loop's events. The study lives in a SQLite
file in the study folder, so a stopped search resumes where it left off.
"""

from __future__ import annotations

import dataclasses
import math
import time
import typing
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from imclass import config as config_mod
from imclass.commands.train import train
from imclass.config import KEYS, RunConfig, format_duration, read_yaml
from imclass.data import SOURCES
from imclass.errors import ConfigError
from imclass.extras import need
from imclass.run_setup import check_names
from imclass.timekeeping import Budget

METHODS = ("grid", "random", "tpe")
PRUNERS = ("median", "halving", "none")


@dataclass(frozen=True)
class Param:
    key: str
    choices: tuple | None = None  # a list of values, or:
    low: float | None = None      # a range [low, high]
    high: float | None = None
    log: bool = False             # sampled uniformly in log space
    integer: bool = False


def _range_param(key: str, spec: dict, typ) -> Param:
    unknown = set(spec) - {"low", "high", "log", "type"}
    if unknown:
        raise ConfigError(f"search space '{key}': unknown field(s) {sorted(unknown)}; a range "
                          "takes low, high, log and type (int or float)")
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"search space '{key}': a range needs both low and high")
    low, high = spec["low"], spec["high"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise ConfigError(f"search space '{key}': low and high must be numbers")
    if not low < high:
        raise ConfigError(f"search space '{key}': low ({low}) must be below high ({high})")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise ConfigError(f"search space '{key}': a log range needs low > 0; got {low}")
    default_type = "int" if typ is int or int in typing.get_args(typ) else "float"
    kind = spec.get("type", default_type)
    if kind not in ("int", "float"):
        raise ConfigError(f"search space '{key}': type must be int or float; got '{kind}'")
    return Param(key, low=low, high=high, log=log, integer=kind == "int")


def parse_space(space: dict[str, Any], base: RunConfig) -> list[Param]:
    """Validate a space against the config (keys, types, allowed ranges) before any trial."""
    if not isinstance(space, dict) or not space:
        raise ConfigError("the search space must be a non-empty mapping of config keys")
    params = []
    for key, spec in space.items():
        name = config_mod.ALIASES.get(key.split(".")[-1], key.split(".")[-1])
        if name not in KEYS:
            raise config_mod.unknown_key_error(key, list(KEYS), "search-space key")
        typ = KEYS[name][2]
        if isinstance(spec, list):
            param = Param(name, choices=tuple(tuple(v) if isinstance(v, list) else v
                                              for v in spec))
            values = param.choices
        elif isinstance(spec, dict) and "choices" in spec:
            param = Param(name, choices=tuple(spec["choices"]))
            values = param.choices
        elif isinstance(spec, dict):
            param = _range_param(key, spec, typ)
            values = (param.low, param.high)
        else:
            raise ConfigError(f"search space '{key}': give a list of choices or "
                              "{low: ..., high: ...}")
        if not values:
            raise ConfigError(f"search space '{key}': no choices given")
        for value in values:  # each end of a range, each choice: allowed for this key?
            try:
                config_mod.override(base, {name: value})
            except ConfigError as exc:
                raise ConfigError(f"search space '{key}': {exc}") from None
        params.append(param)
    return params


def load_space(path: str | Path, base: RunConfig) -> list[Param]:
    path = Path(path)
    data = read_yaml(path, "search space file")
    try:
        return parse_space(data, base)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def suggest(trial, p: Param):
    if p.choices is not None:
        # Optuna stores categorical values as JSON scalars: a tuple choice goes by index.
        if any(isinstance(c, tuple) for c in p.choices):
            return p.choices[trial.suggest_categorical(p.key, list(range(len(p.choices))))]
        return trial.suggest_categorical(p.key, list(p.choices))
    if p.integer:
        return trial.suggest_int(p.key, int(p.low), int(p.high), log=p.log)
    return trial.suggest_float(p.key, float(p.low), float(p.high), log=p.log)


def grid_of(params: list[Param]) -> dict[str, list]:
    """The grid for GridSampler: every choice; a range is refused (it has no grid)."""
    grid = {}
    for p in params:
        if p.choices is None:
            raise ConfigError(f"--method grid needs a list of choices for '{p.key}', not a "
                              "range; use --method random or tpe for ranges")
        grid[p.key] = (list(range(len(p.choices))) if any(isinstance(c, tuple) for c in p.choices)
                       else list(p.choices))
    return grid


class DuplicatePoint(Exception):
    """A grid point another worker already took: the trial is dropped (failed), not run."""


def grid_lock(url: str, out: Path, study_name: str):
    """A context-manager factory that serialises grid-point choices across workers: a file
    lock beside a SQLite study (its workers share one machine), a PostgreSQL advisory lock
    for a study on a server (workers on several machines)."""
    import contextlib
    import fcntl
    import zlib

    if url.startswith("postgresql"):
        import sqlalchemy
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        key = zlib.crc32(f"imclass-grid:{study_name}".encode())

        @contextlib.contextmanager
        def locked():
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        return locked

    @contextlib.contextmanager
    def file_locked():
        with open(out / ".grid.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    return file_locked


def _locked_grid_sampler(grid: dict, seed: int, lock):
    """Optuna's GridSampler, choosing each trial's grid point under `lock`: Optuna picks an
    unvisited point at random, so two workers asking at the same instant could pick the same
    one; under the lock the second sees the first's choice."""
    import optuna

    class LockedGridSampler(optuna.samplers.GridSampler):
        def before_trial(self, study, trial):
            if lock is None:
                return super().before_trial(study, trial)
            with lock():
                return super().before_trial(study, trial)
    return LockedGridSampler(grid, seed=seed)


def make_sampler(method: str, params: list[Param], seed: int, lock=None):
    import optuna
    if method == "grid":
        return _locked_grid_sampler(grid_of(params), seed, lock)
    if method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if method == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    raise ConfigError(f"unknown --method '{method}'; valid: {', '.join(METHODS)}")


def make_pruner(name: str):
    import optuna
    pruners = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3,
                                                             n_warmup_steps=1),
               "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(),
               "none": lambda: optuna.pruners.NopPruner()}
    if name not in pruners:
        raise ConfigError(f"unknown --pruner '{name}'; valid: {', '.join(PRUNERS)}")
    return pruners[name]()


class PruneOnValidation:
    """Reports each epoch's validation score (accuracy, or the --select-metric figure) to the
    trial; stops a hopeless one."""

    def __init__(self, trial):
        self.trial = trial

    def __call__(self, event: str, info: dict):
        import optuna
        if event == "epoch_end":
            self.trial.report(info["val_score"], info["epoch"])
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {info['epoch']}")
        return None


def trial_objective(base: RunConfig, params: list[Param], out: Path, track=None):

    def objective(trial) -> float:
        values = {p.key: suggest(trial, p) for p in params}
        if _taken_elsewhere(trial):
            trial.study.stop()
            raise DuplicatePoint(f"grid point {trial.params} is already taken")
        cfg = config_mod.override(base, values)
        run_dir = train(cfg, out / "trials" / f"trial-{trial.number:03d}", overwrite=True,
                            quiet=True, evaluate_test=False,
                            callbacks=[PruneOnValidation(trial)], track=track,
                            stop_on_signal=False)  # a Ctrl-C interrupts the trial
        import json
        best = json.loads((run_dir / "metrics.json").read_text())["validation"]
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("scored_by", score_name(best["select_metric"]))
        return best["val_score"]
    return objective


def _taken_elsewhere(trial) -> bool:
    """Whether an earlier live or finished trial holds the same parameters (only a grid whose
    points are all taken hands one out again). The earlier trial owns the point, so of two
    such trials exactly one runs."""
    import optuna
    live = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
            optuna.trial.TrialState.RUNNING)
    return any(t.number < trial.number and t.state in live and t.params == trial.params
               for t in trial.study.get_trials(deepcopy=False))


def finished(study) -> int:
    import optuna
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(t.state in done for t in study.get_trials(deepcopy=False))


def best_config(base: RunConfig, params: list[Param], best) -> RunConfig:
    """The best trial's own config, as its run resolved it (config.yaml in its folder): the
    settings a folder's recipe chose (model, pretrained weights, optimizer, augmentation,
    stages) included, so that `imclass train --config best.yaml` trains what the trial
    trained. Rebuilt from the study's base and the trial's parameters when its folder is
    gone (a study resumed elsewhere)."""
    saved = Path(best.user_attrs.get("run_dir", "")) / "config.yaml"
    if best.user_attrs.get("run_dir") and saved.is_file():
        return config_mod.load_yaml(saved)
    values = {}
    for p in params:
        v = best.params[p.key]
        values[p.key] = p.choices[v] if p.choices and any(isinstance(c, tuple)
                                                          for c in p.choices) else v
    return config_mod.resolve(config_mod.override(base, values))


def open_storage(url: str, heartbeat_s: int):
    """RDB storage with a heartbeat: a trial whose process died (killed, machine asleep) is
    marked failed once it has missed three heartbeats, and Optuna's retry callback queues the
    same parameters again, so a resumed grid still covers every point."""
    import optuna
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)
    return _storage_class()(url, heartbeat_interval=heartbeat_s, grace_period=3 * heartbeat_s,
                            heartbeat_stale_trial_callback=retry)


def _storage_class():
    """RDBStorage that also counts as stale a running trial that never recorded a heartbeat
    and started more than a grace period ago. Optuna skips such trials: a worker killed
    between creating a trial and its heartbeat thread's first beat (a few milliseconds) left
    it running for ever, so a resumed grid never ran its point (seen once in the test suite:
    5 of 6 points). A live worker beats within milliseconds of starting a trial, so one
    silent for the grace period is dead. Start times are compared on this machine's clock."""
    import optuna
    from optuna.storages._rdb.models import TrialHeartbeatModel

    class Storage(optuna.storages.RDBStorage):
        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            stale = super()._get_stale_trial_ids(study_id)
            cutoff = datetime.now() - timedelta(seconds=self.grace_period)
            old = [t._trial_id for t in self.get_all_trials(
                study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                if t._trial_id not in stale and t.datetime_start is not None
                and t.datetime_start < cutoff]
            if not old:
                return stale
            session = self.scoped_session()
            try:
                beating = {row[0] for row in session.query(TrialHeartbeatModel.trial_id)
                           .filter(TrialHeartbeatModel.trial_id.in_(old))}
            finally:
                self.scoped_session.remove()
            return stale + [trial_id for trial_id in old if trial_id not in beating]
    return Storage


def check_validated(base: RunConfig, params: list[Param]) -> None:
    """Trials are ranked by validation accuracy, so every trial needs validation images: a
    val/ folder of the dataset's own, or a val_fraction above 0."""
    fractions = [base.data.val_fraction] + [
        low for p in params if p.key == "val_fraction"
        for low in (p.choices if p.choices is not None else (p.low,))]
    own_val = (base.data.source not in SOURCES
               and (Path(base.data.source).expanduser() / "val").is_dir())
    if min(fractions) == 0 and not own_val:
        raise ConfigError("a search ranks its trials by validation accuracy, and "
                          "--val-fraction 0 holds no images out: give it a share above 0 "
                          "(the best trial's config can then be trained on everything)")


def run_study(base: RunConfig, params: list[Param], out: Path, *, method: str = "tpe",
              trials: int = 20, timeout: float | None = None, pruner: str = "median",
              storage: str | None = None, seed: int = 0, heartbeat_s: int = 10,
              callbacks: list | None = None, track=None):
    """Run (or resume) the study until `trials` trials are finished; returns the study.
    `callbacks` are Optuna's: called as callback(study, frozen_trial) after each trial."""
    import optuna

    check_names(base)  # an unknown dataset or model stops here, not in trial 1
    check_validated(base, params)
    # trials are ranked on validation: the recipe may not train a small set on every image
    base = dataclasses.replace(base, explicit=base.explicit | {"val_fraction"})
    # The heartbeat and the matplotlib figures are marked experimental; they work as documented.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    out.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    if url.startswith("postgresql"):
        need("psycopg", "postgres", "a PostgreSQL study (--storage postgresql://...)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    lock = grid_lock(url, out, out.name) if method == "grid" else None
    study = optuna.create_study(storage=open_storage(url, heartbeat_s),
                                sampler=make_sampler(method, params, seed, lock),
                                pruner=make_pruner(pruner), study_name=out.name,
                                direction="maximize", load_if_exists=True)
    remaining = max(0, trials - finished(study))
    grid_size = math.prod(len(v) for v in grid_of(params).values()) if method == "grid" else 0
    if method == "grid" and trials >= grid_size:
        # The whole grid: GridSampler stops the study once every point is done (a killed
        # trial's point is retried first); a finished grid is left alone.
        remaining = None if finished(study) < grid_size else 0
    if remaining is None or remaining > 0:
        study.optimize(trial_objective(base, params, out, track), n_trials=remaining,
                       timeout=timeout, gc_after_trial=True, catch=(DuplicatePoint,),
                       callbacks=callbacks)
    return study


def share_budget(base: RunConfig, trials: int, final_run: bool,
                 started: float | None = None) -> tuple[RunConfig, list]:
    """--budget on a search is the whole search's time: each trial, and the final run of the
    best config, gets an equal share as its own --budget (so each trains what fits its share
    on this machine). Returns the base config with a trial's budget, and the Optuna callback
    that stops starting trials once the next one (and the final run) would not fit."""
    if not base.train.budget:
        return base, []
    runs = trials + int(final_run)
    share = base.train.budget / runs
    if share < 10:
        raise ConfigError(f"--budget {format_duration(base.train.budget)} over {trials} "
                          f"trials{' and the final run' if final_run else ''} leaves "
                          f"{share:.0f}s each; give fewer --trials or a longer --budget")
    study = Budget(base.train.budget, time.monotonic() if started is None else started)
    return config_mod.override(base, {"budget": share}), [BudgetStop(study, share, final_run)]


class BudgetStop:
    """Stops a study from starting a trial that would not end within its budget (with the
    final run's share kept back)."""

    def __init__(self, budget: Budget, share: float, final_run: bool):
        self.budget, self.share, self.final_run = budget, share, final_run

    def __call__(self, study, trial) -> None:
        needed = self.share * (1 + int(self.final_run))
        if self.budget.left() < needed:
            study.stop()


def score_name(select_metric: str) -> str:
    """The validation figure a search maximises: --select-metric's, or accuracy when the
    loss selects epochs (trials with other settings' losses do not compare)."""
    return {"loss": "accuracy"}.get(select_metric, select_metric)


def scored_by(study) -> str:
    """The figure the study's finished trials were scored by (accuracy before any)."""
    names = [t.user_attrs["scored_by"] for t in study.trials if "scored_by" in t.user_attrs]
    return names[-1] if names else "accuracy"


def trial_rows(study) -> tuple[list[str], list[list]]:
    """Every trial: number, state, validation score, seconds, parameters."""
    keys = sorted({k for t in study.trials for k in t.params})
    score = {"accuracy": "val_acc"}.get(scored_by(study), f"val {scored_by(study)}")
    header = ["trial", "state", score, "seconds"] + keys
    rows = []
    for t in study.trials:
        seconds = ((t.datetime_complete - t.datetime_start).total_seconds()
                   if t.datetime_complete and t.datetime_start else None)
        value = t.value if t.value is not None else (
            max(t.intermediate_values.values()) if t.intermediate_values else None)
        rows.append([t.number, t.state.name.lower(), value,
                     round(seconds, 1) if seconds is not None else None]
                    + [t.params.get(k) for k in keys])
    return header, rows


def _plots(study, folder: Path) -> dict[str, Path]:
    """Optuna's own matplotlib figures; one that cannot be drawn yet (too few trials) is left
    out rather than failing the study."""
    import optuna.visualization.matplotlib as vis

    from imclass.plots import pyplot
    pyplot()  # headless backend
    made = {}
    for name, draw in (("history", vis.plot_optimization_history),
                       ("importances", vis.plot_param_importances),
                       ("parallel", vis.plot_parallel_coordinate)):
        try:
            with warnings.catch_warnings():  # e.g. a parameter with one value so far
                warnings.simplefilter("ignore")
                ax = draw(study)
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue
        figure = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
        figure.set_size_inches(9, 5)
        figure.tight_layout()
        figure.savefig(folder / f"{name}.png", dpi=100)
        pyplot().close(figure)
        made[name] = folder / f"{name}.png"
    return made


def write_outputs(study, base: RunConfig, params: list[Param], out: Path, *,
                  final_run: bool = True, quiet: bool = False, track=None) -> dict:
    """trials.csv, plots/, best.yaml, the final labelled test run, and study.html."""
    import csv

    from imclass.atomic import atomic_write_text

    header, rows = trial_rows(study)
    with (out / "trials.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([header] + rows)
    (out / "plots").mkdir(exist_ok=True)
    plots = _plots(study, out / "plots")
    complete = [t for t in study.trials if t.value is not None and t.state.name == "COMPLETE"]
    if not complete:
        raise ConfigError(f"no trial of {out} finished (all pruned or failed); widen the "
                          "space or use --pruner none")
    best = study.best_trial
    cfg = best_config(base, params, best)
    config_mod.save_yaml(cfg, out / "best.yaml")
    test = None
    if final_run:
        run = train(cfg, out / "best-run", overwrite=True, quiet=quiet, track=track,
                        command=f"imclass train --config {out / 'best.yaml'}")
        import json
        test = json.loads((run / "metrics.json").read_text())["test"]
    atomic_write_text(out / "study.html", study_html(out, header, rows, best, plots, test,
                                                     scored_by(study)))
    return {"best_trial": best.number, "best_value": best.value, "scored_by": scored_by(study),
            "best_params": best.params, "test": test}


def study_html(out: Path, header, rows, best, plots: dict, test: dict | None,
               score: str = "accuracy") -> str:
    from html import escape

    from imclass.report import STYLE, html_table, img_tag
    final = ("<p>Not run.</p>" if test is None else
             "<p>One final training run of the best configuration, scored on the test set "
             "(the search itself saw validation figures only):</p>" + html_table(
                 ["metric", "value"], [[k, test[k]] for k in (
                     "accuracy", "balanced_accuracy", "f1_macro", "roc_auc_macro")
                     if k in test]))
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>imclass study: {escape(out.name)}</title><style>{STYLE}</style></head>"
            f"<body><h1>imclass study: {escape(out.name)}</h1>"
            f"<p>Best trial {best.number}: validation {score} {best.value:.4f} with "
            f"<code>{escape(str(best.params))}</code>; ready to train: "
            f"<code>imclass train --config {escape(str(out / 'best.yaml'))}</code>.</p>"
            f"<h2>Best configuration on the test set</h2>{final}"
            f"<h2>Trials</h2>{html_table(header, rows)}"
            "<h2>Search</h2>" + "".join(img_tag(p, n) for n, p in plots.items())
            + "</body></html>\n")
