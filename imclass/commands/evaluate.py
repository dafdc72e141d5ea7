"""`imclass evaluate`: a finished run's best checkpoint on its test or validation split, or on
the same kind of dataset in another folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from imclass.console import make_log
from imclass.data import SOURCES, load_source, prepare
from imclass.data.batches import eval_batch_within
from imclass.devices import keep_freed_memory
from imclass.errors import ConfigError, DataError, memory_stage
from imclass.evaluation import evaluate_split
from imclass.predictor import exported_network
from imclass.report import write_report
from imclass.runfolder import load_run


def evaluate(run_dir: str | Path, *, data_dir: str | Path | None = None, split: str = "test",
             tta: bool = False, batch_size: int | None = None, quiet: bool = False) -> dict:
    """Re-evaluate a run's best checkpoint on its test (or validation) split, or on the same
    kind of dataset in another folder; rewrites that split's metrics, the plots and the
    report. `batch_size` replaces the run's eval_batch_size (images per forward pass).
    Returns {"plain": metrics, "tta": metrics (with tta)}."""
    if split not in ("test", "val"):
        raise ConfigError(f"--split must be test or val; got '{split}'")
    run = load_run(run_dir)
    if run.device.type == "cpu":
        # glibc's default maps and unmaps every large activation block per batch: the test
        # pass of 300 photos at 224 px (lite0) took 3.4 s so, 2.3 s with this (2026-12-06)
        keep_freed_memory()
    builtin = run.config.data.source in SOURCES
    data_cfg = run.data_config
    if data_dir is not None:
        data_cfg = dataclasses.replace(data_cfg, **({"data_dir": str(data_dir)} if builtin
                                                    else {"source": str(data_dir)}))
    data = (load_source(data_cfg).test if split == "test"
            else prepare(data_cfg, run.config.train.seed).val)
    if split == "val" and len(data) == 0:
        raise ConfigError(f"{run_dir} was trained on every training image (--val-fraction 0): "
                          "it has no validation split to evaluate; use --split test")
    if (builtin and data_dir is not None
            and Path(data.source).resolve() != Path(data_dir).resolve()):
        raise DataError(f"{data_dir} holds no {data_cfg.source} dataset (found one only in "
                        f"{data.source}); check the folder")
    if list(data.class_names) != run.class_names:
        raise DataError(f"the classes of {data.source} {list(data.class_names)} differ from "
                        f"the run's {run.class_names}; evaluate on data with the same classes")
    side = run.meta["input"]["height"]
    # a run saved with a batch too large for its input size (before the cap) gets the cap
    batch_size = batch_size or min(run.config.train.eval_batch_size, eval_batch_within(side))
    cfg = dataclasses.replace(run.config, train=dataclasses.replace(
        run.config.train, eval_batch_size=batch_size))
    with memory_stage(f"evaluating {len(data)} images at {data.channels}x{side}x{side} in "
                      f"batches of {cfg.train.eval_batch_size}",
                      "give a smaller --batch-size (the run's checkpoints are unchanged)"):
        result = evaluate_split(Path(run_dir), run.model, run.task, data, run.norm, cfg,
                                run.device, make_log(quiet), split=split, tta=tta,
                                thresholds=run.thresholds, input_size=side,
                                network=exported_network(Path(run_dir), run.device))
    report = write_report(Path(run_dir))
    where = f"plots/{split}/" if split == "val" else "plots/"
    make_log(quiet)(f"updated {Path(run_dir) / 'metrics.json'} ('{split}'), {where} and "
                    f"{report} (the checkpoints are unchanged)")
    return result
