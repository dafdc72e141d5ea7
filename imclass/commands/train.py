"""`imclass train`: what happens in a training run, top to bottom as the data flows.

prepare (config, data, task) -> run folder -> model -> [lr range test] -> fit (callbacks write
history.csv and checkpoints) -> thresholds on validation -> test metrics -> run.json -> report.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import shutil
import signal
import tempfile
import time
from pathlib import Path

import torch

from imclass import checkpoint, config as config_mod, distributed, plots
from imclass import resume as resume_mod
from imclass.config import RunConfig, format_duration
from imclass.console import Log, StageClock, make_log
from imclass.cores import CoreShare
from imclass.data.audit import write_analysis
from imclass.balance import sample_weights
from imclass.budget import SLACK, describe_end, reserve_seconds
from imclass.data.augment import BatchAugment, build_augment
from imclass.data.batches import Batches
from imclass.devices import (hardware, keep_freed_memory, precision_name, release_freed_memory,
                             resolve_device, tune_backend)
from imclass.distributed import Dist
from imclass.errors import ConfigError, DataError, Stopped, memory_stage
from imclass.evaluation import evaluate_split, model_flips, model_shift, predict_split
from imclass.features import FeatureCache, can_cache
from imclass.lr_find import find_lr
from imclass.models.folding import fold_norms
from imclass.pixel_model import view_count
from imclass.predictor import exported_network, save_fast_model
from imclass.pruning import Pruning, PruneSpec
from imclass.report import write_report
from imclass.run_setup import Setup, build_run_model, example_batch, prepare_training
from imclass.runfolder import (HISTORY_COLUMNS, MIN_FREE_BYTES, Checkpointer, HistoryWriter,
                               check_run_dir, check_space, checkpoint_meta, prepare_run_dir,
                               write_json)
from imclass.tracking import TrackOptions, check_available, trackers
from imclass.timekeeping import Budget, Deadline
from imclass.training import (EarlyStopping, OverfitWatch, Progress, StopSignal, epoch_costs,
                               fit, mark_best, weight_average)
from imclass.version import __version__, versions


def train(config: RunConfig | None = None, out: str | Path | None = None, *,
          overwrite: bool = False, quiet: bool = False, verbose: bool = False,
          command: str | None = None,
          callbacks: list | None = None, evaluate_test: bool = True,
          track: TrackOptions | None = None, stop_on_signal: bool = True,
          resume_state: dict | None = None, prune: PruneSpec | None = None,
          started: float | None = None) -> Path:
    """Train, evaluate on the test set and write the report; returns the run folder.

    `callbacks` are called with the training loop's events after the built-in ones (a
    hyperparameter search's pruner is one). With `evaluate_test=False` the test set is never
    looked at: model selection (a search, say) must work from validation figures alone.
    `track` also sends the run to TensorBoard and/or MLflow (tracking.py).
    With `stop_on_signal`, Ctrl-C or SIGTERM ends training after the current batch and the
    run is finished with the epochs it completed (run.json "stopped" says so); a search turns
    it off, so that its trial is interrupted, not scored. `resume_state` (see `resume_run`)
    continues a run in its own folder from the state saved after its last finished epoch.
    With `prune` (imclass prune), the model built from the trained run's weights
    (`config.model.weights`) is pruned before training, which fine-tunes it.
    A --budget counts from `started` (a time.monotonic() reading: the CLI passes its
    process's start), else from this call.

    Launched by torchrun (or `imclass train --nproc N`), every process runs this function:
    the ranks train one model together (imclass.distributed) and rank 0 alone writes `out`;
    the others keep what they must write in a scratch folder, removed at the end.
    """
    dist = distributed.from_environment(resolve_device((config or RunConfig()).train.device))
    scratch = None if dist.is_main else Path(tempfile.mkdtemp(prefix=f"imclass-rank{dist.rank}-"))
    try:
        return _train(config, scratch or out, overwrite=overwrite or scratch is not None,
                      quiet=quiet or scratch is not None, verbose=verbose, command=command,
                      callbacks=callbacks, evaluate_test=evaluate_test,
                      track=track if dist.is_main else None, stop_on_signal=stop_on_signal,
                      resume_state=resume_state, prune=prune, dist=dist,
                      started=time.monotonic() if started is None else started)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        distributed.close(dist)


def _train(config: RunConfig | None, out: str | Path | None, *, overwrite: bool, quiet: bool,
           verbose: bool, command: str | None, callbacks: list | None, evaluate_test: bool,
           track: TrackOptions | None, stop_on_signal: bool, resume_state: dict | None,
           prune: PruneSpec | None, dist: Dist, started: float) -> Path:
    budget = (Budget(config.train.budget, started)
              if config is not None and config.train.budget else None)
    started = time.perf_counter()
    log = make_log(quiet)
    clock = StageClock(log, verbose and not quiet)
    check_run_dir(out, overwrite or resume_state is not None)
    check_available(track)
    with memory_stage("loading the dataset", "give a smaller --image-size, or --subset"):
        setup = prepare_training(config, log, dist, budget)
    deadline = budget_deadline(setup, log, resume_state is not None)
    clock.done("data")
    cfg, splits, task, device = setup.cfg, setup.splits, setup.task, setup.device
    distributed.check_same(dist, same_run_facts(cfg, splits))
    if device.type == "cpu":
        keep_freed_memory()  # no mmap/munmap storm per step (devices.py)
    tune_backend(device)
    run_dir = prepare_run_dir(out, cfg, overwrite or resume_state is not None)
    torch.manual_seed(cfg.train.seed)  # weights and kornia's augmentation draws
    record_analysis(run_dir, splits.analysis, log)
    model, model_info = build_run_model(setup, log)
    cfg = setup.cfg  # with --precision auto settled
    pruned, prune_callbacks = {}, []
    if prune is not None:
        if dist.active:
            raise ConfigError("imclass prune runs in one process; start it without torchrun")
        prune.save(run_dir)  # so that --resume prunes the same way again
        model, pruned, prune_callbacks = Pruning(prune)(model, setup, log)
        model_info |= {k: pruned["pruned"]["after"][k] for k in ("parameters", "flops_per_image")}
    model = model.to(memory_format=distributed.memory_format(dist, device,
                                                             cfg.train.channels_last))
    if dist.active and cfg.train.sync_bn:
        model = distributed.sync_batchnorm(model, device)
    else:  # (a synchronised BatchNorm is not folded: its ranks must run alike)
        model_info["folded_norms"] = fold_norms(model, example_batch(setup, device))
    # checkpoints best + last, the resume state (current, best, optimizer) and a margin
    check_space(run_dir, 8 * 4 * model_info["parameters"] + MIN_FREE_BYTES)
    lr_found = None
    if cfg.train.lr == "auto":
        if dist.is_main:  # the others wait for its finding
            lr_found = find_lr(setup, model, run_dir / "plots" / "lr_find.png", log)
        lr_found = distributed.broadcast(dist, lr_found)
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=lr_found))
        setup = dataclasses.replace(setup, cfg=cfg)
    config_mod.save_yaml(cfg, run_dir / "config.yaml")
    meta = checkpoint_meta(cfg, splits, task) | {"architecture": setup.architecture} | pruned
    tracked = trackers(track, run_dir, config_mod.to_dict(cfg), {
        "task": task.name, "architecture": setup.architecture or cfg.model.name,
        "dataset": Path(cfg.data.source).name, "run": run_dir.name}, log)
    shape = f"{splits.train.channels}x{splits.input_size}x{splits.input_size}"
    with memory_stage(f"training on {len(splits.train)} images at {shape} in batches of "
                      f"{cfg.train.batch_size}",
                      f"give a smaller --batch-size; the epochs already finished are kept in "
                      f"{run_dir / 'checkpoints'}"):
        result, overfit_warnings = fit_run(run_dir, setup, model, quiet, log,
                                           [*prune_callbacks, *tracked, *(callbacks or [])],
                                           meta, stop_on_signal, resume_state, deadline)
    release_freed_memory()  # what training kept: evaluation allocates other sizes
    budget_info = budget_summary(setup, result)
    stopped = stop_summary(result, cfg.train.epochs, log)
    fits = tune_thresholds(run_dir, model, setup, log)
    thresholds = None if fits is None else [f.value for f in fits]
    clock.done("training")
    best = result.history[result.best_epoch - 1]
    write_json(run_dir / "metrics.json", {"validation": {
        k: best[k] for k in ("epoch", "val_loss", "val_acc", "val_balanced_acc", "val_macro_f1",
                             "train_loss", "train_acc", "select_metric", "val_score")}})
    summary = {"data": splits.summary(), "model": model_info, "best_epoch": result.best_epoch,
               "epochs_run": len(result.history), "stopped_early": result.stopped_early,
               "overfitting": overfit_warnings, "stages": result.stages, "lr_found": lr_found,
               "recipe": {"name": setup.recipe.name, "line": setup.recipe.line(cfg),
                          "reason": setup.recipe.reason, "chosen": setup.recipe.values},
               "hardware": hardware(device),
               "device": device.type, "precision": precision_name(device, cfg.train.precision),
               "train_seconds": time.perf_counter() - started,
               "command": command, "versions": versions(), "task": task.name,
               "thresholds": thresholds,
               "threshold_fits": None if fits is None else [dataclasses.asdict(f) for f in fits],
               "balance": setup.balance.as_dict() if setup.balance else None,
               "select_metric": cfg.train.select_metric,
               "validation": {k: best[k] for k in ("epoch", "val_loss", "val_acc",
                                                   "val_balanced_acc")},
               "stopped": stopped, "budget": budget_info, **pruned}
    if evaluate_test:
        write_json(run_dir / "run.json", summary)  # kept should evaluation run out of memory
        if dist.is_main:  # predict and serve load it without building the network; on a CPU
            save_fast_model(run_dir)  # the test pass runs it (imclass.evaluation)
        with memory_stage(f"evaluating {len(splits.test)} test images at {shape} in batches "
                          f"of {cfg.train.eval_batch_size}",
                          f"the trained model is kept in {run_dir / 'checkpoints'}: imclass "
                          f"evaluate {run_dir} --batch-size {max(1, cfg.train.eval_batch_size // 4)}"
                          " finishes the run's report"):
            evaluate_split(run_dir, model, task, splits.test, splits.norm, cfg, device, log,
                           thresholds=thresholds, input_size=splits.input_size, dist=dist,
                           network=None if dist.active else exported_network(run_dir, device))
    else:
        plots.curves(mark_best(result.history, cfg.train), run_dir / "plots" / "curves.png")
    clock.done("evaluation")
    summary["processes"] = dist.world
    if not dist.is_main:
        return run_dir
    summary["total_seconds"] = time.perf_counter() - started  # all but writing the report
    summary["stage_seconds"] = clock.seconds
    if budget_info is not None:
        budget_info["total_seconds"] = round(setup.budget.elapsed(), 1)
    write_json(run_dir / "run.json", summary)
    report = write_report(run_dir)
    clock.done("report")
    if budget_info is not None:
        log(describe_end({**budget_info, "total_seconds": setup.budget.elapsed()}))
    test = json.loads((run_dir / "metrics.json").read_text()).get("test", {})
    for tracker in tracked:
        tracker.finish(run_dir, config_mod.to_dict(cfg), test)
    log(f"total {summary['total_seconds']:.0f}s; report: {report.resolve()}")
    return run_dir


def record_analysis(run_dir: Path, analysis: dict | None, log: Log) -> None:
    """A folder dataset's findings: analysis.json and the class-count plot in the run folder,
    a one-line count (and the skipped images) on the console."""
    if analysis is None:
        return
    write_analysis(analysis, run_dir)
    levels = analysis["counts_by_level"]
    if levels.get("warning"):
        codes = sorted({f["code"] for f in analysis["findings"] if f["level"] == "warning"})
        log(f"dataset: {levels['warning']} warning(s) ({', '.join(codes)}); see "
            f"{run_dir / 'analysis.json'} or run imclass analyze {analysis['root']}")
    for s in analysis["skipped"][:5]:
        log(f"skipped {s['split']}/{s['file']}: {s['reason']}")


def same_run_facts(cfg: RunConfig, splits) -> dict:
    """What every rank of a distributed run must agree on before training together."""
    config = hashlib.sha256(json.dumps(config_mod.to_dict(cfg), sort_keys=True,
                                       default=str).encode()).hexdigest()[:16]
    labels = hashlib.sha256(b"".join(s.labels.numpy().tobytes() for s in (
        splits.train, splits.val, splits.test))).hexdigest()[:16]
    return {"imclass version": __version__, "config": config,
            "dataset": f"{len(splits.train)}/{len(splits.val)}/{len(splits.test)} images, "
                       f"labels {labels}"}


def tune_thresholds(run_dir: Path, model, setup: Setup, log: Log) -> list | None:
    """Binary and multilabel decision thresholds with the best validation F1
    (imclass.metrics.ThresholdFit: 0.5 where validation is too small to tune on), saved into the
    best checkpoint's sidecar so evaluate and predict decide the same way."""
    splits, task, device = setup.splits, setup.task, setup.device
    if not (splits.validated and task.fits_thresholds):
        return None  # the task's default: 0.5, or the most probable class
    probs, labels = predict_split(model, splits.val.center_cropped(splits.input_size),
                                  splits.norm, setup.cfg.train.eval_batch_size, task, device,
                                  setup.dist, flips=model_flips(setup.cfg),
                                  shift=model_shift(setup.cfg))
    fits = task.tune_thresholds(labels, probs)
    if fits is None:
        return None
    if not setup.dist.is_main:
        return fits
    best = run_dir / "checkpoints" / "best"
    _, saved = checkpoint.load(best)
    checkpoint.save(best, model, {**saved, "thresholds": [f.value for f in fits]})
    log("decision threshold(s) for the best validation F1: " + "; ".join(
        f.describe(n) for n, f in zip(splits.train.class_names[-len(fits):], fits)))
    return fits


def plot_augmented(path: Path, train, augment, seed: int, count: int = 24) -> None:
    """A few training images as the model sees them after augmentation, for the report. Drawn
    from a forked generator so the training run's random stream is the same with or without."""
    x = train.gather(torch.arange(min(count, len(train)))).float().div(255)
    with torch.random.fork_rng():
        torch.manual_seed(seed + 1)
        if augment is not None:
            x = augment(x)
    title = "training images after augmentation" if augment else "training images (no augmentation)"
    plots.image_grid((x * 255).round().to(torch.uint8).numpy(), title, path)


def budget_deadline(setup: Setup, log: Log, resumed: bool) -> Deadline | None:
    """When a budget run's training must end: its budget less the time the test pass, the
    figures and the report will take (imclass.budget.reserve_seconds). A resumed run's
    schedule holds the training time it had left, so its deadline is that schedule's."""
    if setup.budget is None:
        return None
    b, splits = setup.budget, setup.splits
    if resumed:
        return Deadline(time.monotonic() + b.seconds)
    speeds = setup.budget_plan["measured"][setup.budget_plan["chosen"]]
    views = view_count(model_flips(setup.cfg), model_shift(setup.cfg))
    after = SLACK * b.seconds + reserve_seconds(
        len(splits.test), len(splits.val) if splits.validated else 0,
        speeds["eval_images_per_s"], views)
    deadline = b.deadline(after)
    if deadline.left() < 1:
        raise ConfigError(
            f"--budget {format_duration(b.seconds)} leaves no time to train: "
            f"{b.elapsed():.0f}s went to start-up, loading and measuring, and the test "
            f"evaluation and report need about {after:.0f}s; give at least "
            f"{format_duration(b.elapsed() + after + 30)}")
    log(f"budget: training ends {b.seconds - after:.0f}s into the run ({deadline.left():.0f}s "
        f"from now), leaving {after:.0f}s for the test evaluation and the report")
    setup.budget_plan["training_deadline_s"] = round(b.seconds - after, 1)
    return deadline


def budget_summary(setup: Setup, result) -> dict | None:
    """run.json's "budget": what was measured and planned, and how training ended."""
    if setup.budget is None:
        return None
    ended_by = ("the clock" if result.stopped_by_budget else
                "early stopping" if result.stopped_early else
                "the user" if result.stopped_by else "its planned epochs")
    return {**setup.budget_plan, "training_ended_at_s": round(setup.budget.elapsed(), 1),
            "ended_by": ended_by, "epochs_run": len(result.history)}


def stop_summary(result, epochs: int, log: Log) -> dict | None:
    """What run.json and the report say of a run the user stopped; Stopped (exit 130 or 143)
    when it stopped before finishing one epoch, with nothing to keep."""
    if result.stopped_by is None:
        return None
    signum = int(getattr(signal, result.stopped_by))
    where = f"epoch {result.stopped_in_epoch} of {epochs}"
    if not result.history:
        raise Stopped(f"stopped by the user ({result.stopped_by}) in {where}, before any "
                      "epoch finished: nothing to keep", signum)
    log(f"stopped by the user ({result.stopped_by}) at {where}; that epoch is dropped and "
        f"the run finishes with epoch {result.best_epoch}, the best of the "
        f"{len(result.history)} it completed")
    return {"by": result.stopped_by, "signal_number": signum,
            "epoch": result.stopped_in_epoch, "epochs": epochs}


# The train keys a resumed run may change: they do not change its result.
RESUMABLE = ("device", "checkpoint_minutes")


def resume_run(run_dir: str | Path, *, quiet: bool = False, verbose: bool = False,
               overrides: dict | None = None, track: TrackOptions | None = None,
               command: str | None = None) -> Path:
    """Continue a killed or stopped run from its last saved state (an epoch's end, or a batch
    inside a long epoch), with the run's own config; on the same device it ends as if never
    interrupted. `overrides` may set the RESUMABLE keys only."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise DataError(f"{run_dir} holds no run to resume (no config.yaml)")
    summary = run_dir / "run.json"
    if summary.is_file() and not json.loads(summary.read_text()).get("stopped"):
        raise ConfigError(f"{run_dir} is a finished run: nothing to resume (its report is "
                          f"{run_dir / 'report.html'})")
    state = resume_mod.load(run_dir / "checkpoints")
    cfg = config_mod.load_yaml(run_dir / "config.yaml")
    unknown = set(overrides or {}) - set(RESUMABLE)
    if unknown:
        raise ConfigError(f"a resumed run keeps its config; {sorted(unknown)[0]} cannot change "
                          f"(only {', '.join(RESUMABLE)})")
    if overrides:
        cfg = config_mod.override(cfg, overrides)
    return train(cfg, run_dir, quiet=quiet, verbose=verbose, track=track, command=command,
                 resume_state=state, prune=PruneSpec.read(run_dir))


def early_crops(batches: Batches, early: BatchAugment, side: int, epochs: int):
    """A callback training the first `epochs` epochs on `early`'s crops of `side` px, the rest
    on the crops `batches` was built with (--early-size, --early-epochs: progressive
    resizing). It sets the side at every epoch's start, so a resumed run picks it up too."""
    later = batches.augment, batches.size

    def callback(event: str, info: dict) -> None:
        if event == "epoch_start":
            batches.augment, batches.size = (early, side) if info["epoch"] <= epochs else later
    return callback


def fit_run(run_dir: Path, setup: Setup, model, quiet: bool, log: Log, extra_callbacks: list,
            meta: dict, stop_on_signal: bool = True, resume_state: dict | None = None,
            deadline: Deadline | None = None):
    """The training loop with its callbacks; returns the FitResult and overfitting warnings.
    With `deadline` (--budget) training ends by it."""
    cfg, splits, device, dist = setup.cfg, setup.splits, setup.device, setup.dist
    t = cfg.train
    distributed.check_batch(dist, t.batch_size, len(splits.train))
    channels_last = distributed.memory_format(dist, device, t.channels_last) == \
        torch.channels_last
    side = cfg.data.training_side(splits.input_size)
    augment = build_augment(cfg.augment, (splits.train.channels, *splits.train.size), side)
    train_batches = Batches(splits.train, t.batch_size, splits.norm, shuffle=True,
                            augment=augment, seed=t.seed, device=device,
                            drop_last=len(splits.train) > t.batch_size, size=side,
                            shard=(dist.rank, dist.world), channels_last=channels_last,
                            draw_weights=sample_weights(splits.train.labels)
                            if t.balance == "sampler" else None)
    val_batches = None  # none without validation (--val-fraction 0)
    if splits.validated:
        val_share = splits.val.take(torch.as_tensor(dist.shard(len(splits.val))))
        val_batches = Batches(val_share, t.eval_batch_size, splits.norm, device=device,
                              size=splits.input_size, channels_last=channels_last)
    features = None
    if t.feature_views and t.freeze_epochs and can_cache(model) and not dist.active:
        plain_train = Batches(splits.train, t.eval_batch_size, splits.norm, augment=augment,
                              device=device, size=side,
                              channels_last=channels_last)
        features = FeatureCache(t.feature_views, t.seed, cfg.model.dropout, plain_train,
                                train_batches, val_batches, log)
    ema = weight_average(model, t.ema)
    evaluated = model if ema is None else ema.module  # what is validated, saved and tested
    overfit = OverfitWatch(t.overfit_epochs, log)
    history = HistoryWriter(run_dir / "history.csv")
    costs = epoch_costs(t, side, cfg.data.early_size)
    callbacks = [Progress(enabled=not quiet, costs=costs), EarlyStopping(t.patience), overfit]
    if device.type == "cpu" and not dist.active:  # torchrun's ranks have their share set
        callbacks.append(CoreShare(log))
    if t.early_epochs and cfg.data.early_size:
        callbacks.append(early_crops(train_batches, build_augment(
            cfg.augment, (splits.train.channels, *splits.train.size), cfg.data.early_size),
            cfg.data.early_size, t.early_epochs))
    if dist.is_main:  # the files of the run; the other ranks only train
        plot_augmented(run_dir / "plots" / "augmented.png", splits.train, augment, t.seed)
        callbacks += [history, Checkpointer(run_dir / "checkpoints", evaluated, meta,
                                            validated=val_batches is not None),
                      *extra_callbacks]
    if resume_state is not None:
        restore(resume_state, model, ema, train_batches, overfit, history, log)

    def save_state(info: dict) -> None:
        result = info["result"]
        loop = {k: info[k] for k in ("epoch", "stage_index", "epochs_in_stage",
                                     "stage_finished", "finished", "mid_epoch")}
        loop |= {"history": result.history, "stages": result.stages,
                 "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
                 "overfit": {"streak": overfit.streak, "previous": overfit.previous,
                             "warnings": overfit.warnings, "said_at_loss": overfit.said_at_loss,
                             "lowest": overfit.lowest}}
        # after an epoch that improved (every epoch without validation) the best weights are
        # the current ones: not written twice (13.5 MB of Lite0's 68 MB state)
        loop["best_is_current"] = info["mid_epoch"] is None and result.best_epoch == info["epoch"]
        resume_mod.save(run_dir / "checkpoints", model=model,
                        best=None if loop["best_is_current"] else info["best"],
                        optimizer=info["optimizer"], scheduler=info["scheduler"], ema=ema,
                        order_state=train_batches.pass_start_state if info["mid_epoch"]
                        else train_batches.generator.get_state(), loop=loop)
    try:
        with StopSignal() if stop_on_signal else contextlib.nullcontext() as stop:
            result = fit(model, train_batches, val_batches,
                         setup.task.loss(t.loss, t.label_smoothing, setup.balance), t, device,
                         callbacks, hits=setup.task.hits, scorer=setup.task, stop=stop,
                         on_state=save_state if dist.is_main else None,
                         resume=resume_state, dist=dist, ema=ema, features=features,
                         deadline=deadline)
    except OSError as exc:  # a full disk, a vanished folder: every write is atomic
        raise DataError(f"could not write {exc.filename or 'into the run folder'} "
                        f"({exc.strerror or exc}); the files written before are intact: "
                        f"make room, then imclass train --resume {run_dir}") from None
    if result.stopped_early:
        log(f"early stopping after epoch {len(result.history)}: no improvement of the "
            f"validation {t.select_metric} for {t.patience} epochs; keeping epoch "
            f"{result.best_epoch}")
    return result, overfit.warnings


def restore(state: dict, model, ema, train_batches, overfit, history, log: Log) -> None:
    """The loop's state as it was after the saved epoch: weights (and their average, with
    --ema), generators, callbacks."""
    loop = state["loop"]
    model.load_state_dict(state["model"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
    if loop.get("best_is_current"):  # the weights just loaded, as fit keeps its best
        state["best"] = copy.deepcopy((model if ema is None else ema.module).state_dict())
    resume_mod.restore_generators(state, train_batches.generator)
    history.rows = [{k: row.get(k, math.nan) for k in HISTORY_COLUMNS}  # older runs: fewer
                    for row in loop["history"]]
    overfit.streak, overfit.previous = loop["overfit"]["streak"], loop["overfit"]["previous"]
    overfit.warnings = loop["overfit"]["warnings"]
    overfit.said_at_loss = loop["overfit"].get("said_at_loss")
    overfit.lowest = loop["overfit"].get("lowest", math.inf)
    mid = loop.get("mid_epoch")
    where = (f"in epoch {loop['epoch'] + 1} after batch {mid['step']} of {len(train_batches)}"
             if mid else f"after epoch {loop['epoch']}")
    log(f"resuming {where} (best so far: epoch {loop['best_epoch']})")
