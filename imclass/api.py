"""The public operations: `train`, `evaluate` and `predict`, each a few calls over the stages."""

from __future__ import annotations

import csv
import dataclasses
import json
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from imclass import __version__, config as config_mod
from imclass.atomic import atomic_write_text
from imclass.config import RunConfig
from imclass.errors import ConfigError, DataError
from imclass.report import HEADLINES, write_report

HISTORY_COLUMNS = ("epoch", "stage", "train_loss", "train_acc", "val_loss", "val_acc", "lr",
                   "seconds", "images_per_s")


def _log(quiet: bool):
    def log(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr, flush=True)
    return log


def versions() -> dict[str, str]:
    import numpy
    import sklearn
    return {"imclass": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "scikit-learn": sklearn.__version__, "python": platform.python_version()}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} CPU, {torch.get_num_threads()} threads"


def check_run_dir(out: str | Path | None, overwrite: bool) -> None:
    """Refuse to mix a new run into a folder that holds an earlier one."""
    if out is not None and (Path(out) / "config.yaml").exists() and not overwrite:
        raise ConfigError(f"{out} already holds a run; choose another --out or pass "
                          "--overwrite to replace it")


def prepare_run_dir(out: str | Path | None, cfg: RunConfig, overwrite: bool) -> Path:
    """The run folder, with checkpoints/ and plots/ inside (default: a new timestamped one)."""
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        dataset = Path(cfg.data.source).name or "data"
        out = Path("runs") / f"{dataset}-{cfg.model.name}-{stamp}"
    run_dir = Path(out)
    check_run_dir(run_dir, overwrite)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "plots").mkdir(exist_ok=True)
    return run_dir


class HistoryWriter:
    """Rewrites history.csv after every epoch, so a stopped run keeps what it did."""

    def __init__(self, path: Path):
        self.path, self.rows = path, []

    def __call__(self, event: str, info: dict):
        if event != "epoch_end":
            return None
        self.rows.append({k: info[k] for k in HISTORY_COLUMNS})
        lines = [",".join(HISTORY_COLUMNS)]
        lines += [",".join(f"{row[k]:.6g}" if isinstance(row[k], float) else str(row[k])
                           for k in HISTORY_COLUMNS) for row in self.rows]
        atomic_write_text(self.path, "\n".join(lines) + "\n")
        return None


class Checkpointer:
    """Saves `last` after every epoch and `best` whenever validation loss improved."""

    def __init__(self, folder: Path, model: torch.nn.Module, meta: dict):
        self.folder, self.model, self.meta = folder, model, meta

    def __call__(self, event: str, info: dict):
        if event != "epoch_end":
            return None
        from imclass import checkpoint
        metrics = {k: info[k] for k in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")}
        meta = {**self.meta, "metrics": metrics}
        checkpoint.save(self.folder / "last", self.model, meta)
        if info["improved"]:
            checkpoint.save(self.folder / "best", self.model, meta)
        return None


def read_history(run_dir: Path) -> list[dict[str, float]]:
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


@dataclass
class Setup:
    """What a training run needs before its first file is written."""
    cfg: RunConfig
    device: torch.device
    splits: Any
    task: Any
    architecture: str
    weights_source: str | None


def prepare_training(config: RunConfig | None, log) -> Setup:
    """Config resolved, data loaded and split, task chosen: everything that can fail on bad
    input fails here, before a run folder exists."""
    from imclass.data import prepare
    from imclass.models.weights import resolve_architecture
    from imclass.tasks import get_task
    from imclass.training import resolve_device

    cfg = config_mod.resolve(config_mod.validate(config or RunConfig()))
    device = resolve_device(cfg.train.device)
    architecture, weights_source = resolve_architecture(cfg.model)
    cfg = _data_for_model(cfg, architecture)
    splits = prepare(cfg.data, cfg.train.seed)
    if weights_source is not None and cfg.model.name != "cnn":
        splits = dataclasses.replace(splits, norm=_pretrained_norm(architecture,
                                                                   splits.train.channels))
    log(f"data: {len(splits.train)} train / {len(splits.val)} validation / {len(splits.test)} "
        f"test images, {splits.train.channels}x{splits.train.size[0]}x{splits.train.size[1]}, "
        f"{len(splits.train.class_names)} classes ({splits.task}), from {splits.train.source}")
    task = get_task(splits.task, cfg.data.hierarchy_sep)
    return Setup(cfg, device, splits, task, architecture, weights_source)


def train(config: RunConfig | None = None, out: str | Path | None = None, *,
          overwrite: bool = False, quiet: bool = False, command: str | None = None,
          callbacks: list | None = None, evaluate_test: bool = True) -> Path:
    """Train, evaluate on the test set and write the report; returns the run folder.

    `callbacks` are called with the training loop's events after the built-in ones (a
    hyperparameter search's pruner is one). With `evaluate_test=False` the test set is never
    looked at: model selection (a search, say) must work from validation figures alone.
    """
    started = time.perf_counter()
    log = _log(quiet)
    check_run_dir(out, overwrite)
    setup = prepare_training(config, log)
    cfg, splits, task, device = setup.cfg, setup.splits, setup.task, setup.device
    run_dir = prepare_run_dir(out, cfg, overwrite)
    torch.manual_seed(cfg.train.seed)  # weights and kornia's augmentation draws
    _record_analysis(run_dir, splits.analysis, log)
    model, model_info = _build_model(cfg, splits, task, device, log, setup.architecture,
                                     setup.weights_source)
    lr_found = None
    if cfg.train.lr == "auto":
        from imclass.lr_find import find_lr
        lr_found = find_lr(setup, model, run_dir / "plots" / "lr_find.png", log)
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=lr_found))
    config_mod.save_yaml(cfg, run_dir / "config.yaml")
    meta = checkpoint_meta(cfg, splits, task) | {"architecture": setup.architecture}
    result, overfit_warnings = _fit(run_dir, cfg, splits, model, task, device, quiet, log,
                                    list(callbacks or []), meta)
    thresholds = _tune_thresholds(run_dir, model, task, splits, device, cfg, meta, log)
    best = result.history[result.best_epoch - 1]
    _write_json(run_dir / "metrics.json", {"validation": {
        k: best[k] for k in ("epoch", "val_loss", "val_acc", "train_loss", "train_acc")}})
    summary = {"data": splits.summary(), "model": model_info, "best_epoch": result.best_epoch,
               "epochs_run": len(result.history), "stopped_early": result.stopped_early,
               "overfitting": overfit_warnings, "stages": result.stages, "lr_found": lr_found,
               "hardware": hardware(device),
               "device": device.type, "train_seconds": time.perf_counter() - started,
               "command": command, "versions": versions(), "task": task.name,
               "thresholds": thresholds,
               "validation": {k: best[k] for k in ("epoch", "val_loss", "val_acc")}}
    if evaluate_test:
        _evaluate_on_test(run_dir, model, task, splits.test, splits.norm, cfg, device, log,
                          thresholds=thresholds)
    else:
        from imclass import plots
        plots.curves(result.history, run_dir / "plots" / "curves.png")
    summary["total_seconds"] = time.perf_counter() - started  # all but writing the report
    _write_json(run_dir / "run.json", summary)
    report = write_report(run_dir)
    log(f"total {summary['total_seconds']:.0f}s; report: {report.resolve()}")
    return run_dir


def _record_analysis(run_dir: Path, analysis: dict | None, log) -> None:
    """A folder dataset's findings: analysis.json and the class-count plot in the run folder,
    a one-line count (and the skipped images) on the console."""
    if analysis is None:
        return
    from imclass.analyze import write_analysis

    write_analysis(analysis, run_dir)
    levels = analysis["counts_by_level"]
    if levels.get("warning"):
        codes = sorted({f["code"] for f in analysis["findings"] if f["level"] == "warning"})
        log(f"dataset: {levels['warning']} warning(s) ({', '.join(codes)}); see "
            f"{run_dir / 'analysis.json'} or run imclass analyze {analysis['root']}")
    for s in analysis["skipped"][:5]:
        log(f"skipped {s['split']}/{s['file']}: {s['reason']}")


def _tune_thresholds(run_dir: Path, model, task, splits, device, cfg: RunConfig, meta: dict,
                     log) -> list[float] | None:
    """Binary and multilabel decision thresholds with the best validation F1, saved into the
    best checkpoint's sidecar so evaluate and predict decide the same way."""
    from imclass import checkpoint
    from imclass.data.batches import Batches
    from imclass.metrics import predict_probabilities

    batches = Batches(splits.val, cfg.train.eval_batch_size, splits.norm, device=device)
    probs, labels = predict_probabilities(model, batches, task, device)
    thresholds = task.tune_thresholds(labels, probs)
    if thresholds is None:
        return None
    best = run_dir / "checkpoints" / "best"
    _, saved = checkpoint.load(best)
    checkpoint.save(best, model, {**saved, "thresholds": thresholds})
    log("decision threshold(s) tuned on validation for the best F1: "
        + ", ".join(f"{n} {t:.3f}" for n, t in zip(
            splits.train.class_names[-len(thresholds):], thresholds)))
    return thresholds


def _data_for_model(cfg: RunConfig, architecture: str) -> RunConfig:
    """A timm model's input size and resampling, where the config leaves them unset."""
    from imclass.models import MODELS
    from imclass.models.zoo import input_spec

    if cfg.model.name in MODELS:
        return cfg
    spec = input_spec(architecture)
    data = dataclasses.replace(cfg.data, image_size=cfg.data.image_size or spec.size,
                               interpolation=cfg.data.interpolation or spec.interpolation)
    return dataclasses.replace(cfg, data=data)


def _pretrained_norm(architecture: str, channels: int):
    """The normalisation the weights were trained with (averaged over RGB for greyscale data,
    which the first convolution sees summed over its RGB filters)."""
    from imclass.data.batches import Normalization
    from imclass.models.zoo import input_spec

    spec = input_spec(architecture)
    if channels == 1:
        return Normalization((sum(spec.mean) / 3,), (sum(spec.std) / 3,))
    return Normalization(spec.mean, spec.std)


def _build_model(cfg: RunConfig, splits, task, device: torch.device, log, architecture: str,
                 weights_source: str | None):
    """The model (with its pretrained or local weights) on its device, and its size."""
    from imclass.models import build_model, count_parameters, flops_per_image
    from imclass.models.weights import load_pretrained

    shape = (splits.train.channels, *splits.train.size)
    model = build_model(cfg.model, shape[0], task.num_outputs(len(splits.train.class_names)),
                        architecture)
    loaded = load_pretrained(model, cfg.model, weights_source)
    if loaded is not None:
        log(loaded.summary())
    model = model.to(device, memory_format=torch.channels_last)
    info = {"name": cfg.model.name, "architecture": architecture,
            "parameters": count_parameters(model), "flops_per_image": flops_per_image(model, shape),
            "weights": loaded.as_dict() if loaded else None}
    log(f"model: {architecture}, {info['parameters']:,} parameters, "
        f"{info['flops_per_image'] / 1e6:.1f} MFLOPs per image; training on {hardware(device)}")
    return model, info


def checkpoint_meta(cfg: RunConfig, splits, task) -> dict:
    """What a checkpoint's sidecar holds besides its metrics: all it takes to use the weights."""
    train = splits.train
    return {"config": config_mod.to_dict(cfg), "class_names": list(train.class_names),
            "task": task.name, "hierarchy_sep": cfg.data.hierarchy_sep,
            "input": {"channels": train.channels, "height": train.size[0],
                      "width": train.size[1]},
            "normalization": {"mean": list(splits.norm.mean), "std": list(splits.norm.std)},
            "versions": versions()}


def _plot_augmented(path: Path, train, augment, seed: int, count: int = 24) -> None:
    """A few training images as the model sees them after augmentation, for the report. Drawn
    from a forked generator so the training run's random stream is the same with or without."""
    from imclass import plots

    x = train.images[:count].float().div(255)
    with torch.random.fork_rng():
        torch.manual_seed(seed + 1)
        if augment is not None:
            x = augment(x)
    title = "training images after augmentation" if augment else "training images (no augmentation)"
    plots.image_grid((x * 255).round().to(torch.uint8).numpy(), title, path)


def _fit(run_dir: Path, cfg: RunConfig, splits, model, task, device, quiet: bool, log,
         extra_callbacks: list, meta: dict):
    """The training loop with its callbacks; returns the FitResult and overfitting warnings."""
    from imclass.data.augment import build_augment
    from imclass.data.batches import Batches
    from imclass.training import EarlyStopping, OverfitWatch, Progress, fit

    t = cfg.train
    augment = build_augment(cfg.augment, (splits.train.channels, *splits.train.size))
    train_batches = Batches(splits.train, t.batch_size, splits.norm, shuffle=True,
                            augment=augment, seed=t.seed, device=device,
                            drop_last=len(splits.train) > t.batch_size)
    val_batches = Batches(splits.val, t.eval_batch_size, splits.norm, device=device)
    _plot_augmented(run_dir / "plots" / "augmented.png", splits.train, augment, t.seed)
    overfit = OverfitWatch(t.overfit_epochs, log)
    callbacks = [Progress(enabled=not quiet), EarlyStopping(t.patience), overfit,
                 HistoryWriter(run_dir / "history.csv"),
                 Checkpointer(run_dir / "checkpoints", model, meta),
                 *extra_callbacks]
    result = fit(model, train_batches, val_batches, task.loss(t.loss, t.label_smoothing), t,
                 device, callbacks, hits=task.hits)
    if result.stopped_early:
        log(f"early stopping after epoch {len(result.history)}: no validation-loss improvement "
            f"for {t.patience} epochs; keeping epoch {result.best_epoch}")
    return result, overfit.warnings


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2))


def _evaluate_on_test(run_dir: Path, model, task, test_set, norm, cfg: RunConfig,
                      device: torch.device, log, *, split: str = "test", tta: bool = False,
                      thresholds=None) -> dict:
    """Metrics into metrics.json under `split` (and `split`_tta), figures under plots/."""
    from imclass.evaluation import evaluate_model

    flips = tta_flips(cfg) if tta else ()
    folder = run_dir / "plots" if split == "test" else run_dir / "plots" / split
    history = read_history(run_dir) if split == "test" else None
    result = evaluate_model(model, task, test_set, norm, device, folder, history=history,
                            tta_flips=flips, batch_size=cfg.train.eval_batch_size,
                            seed=cfg.train.seed, thresholds=thresholds)
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    for m in result.values():
        m["source"] = test_set.source
    metrics[split] = result["plain"]
    metrics.pop(f"{split}_tta", None)
    if "tta" in result:
        metrics[f"{split}_tta"] = result["tta"]
    _write_json(metrics_path, metrics)
    for key, m in ((split, result["plain"]), (f"{split} with TTA", result.get("tta"))):
        if m:
            log(f"{key}: {headline(m)} on {m['count']} images")
    return result


def headline(m: dict) -> str:
    return ", ".join(f"{label} {m[key]:.4f}" for key, label in HEADLINES[m.get("task",
                     "multiclass")] if m.get(key) is not None)


def tta_flips(cfg: RunConfig) -> tuple[int, ...]:
    """The flips the model was trained to be indifferent to: only those are fair at test time."""
    flips = tuple(dim for dim, p in ((-1, cfg.augment.hflip_p), (-2, cfg.augment.vflip_p)) if p)
    if not flips:
        raise ConfigError("--tta averages over the flips the run was trained with, and this "
                          "run used none; train with --hflip-p or --vflip-p above 0")
    return flips


@dataclass
class LoadedRun:
    model: torch.nn.Module
    meta: dict
    config: RunConfig
    device: torch.device

    @property
    def class_names(self) -> list[str]:
        return self.meta["class_names"]

    @property
    def norm(self):
        from imclass.data.batches import Normalization
        n = self.meta["normalization"]
        return Normalization(tuple(n["mean"]), tuple(n["std"]))

    @property
    def task(self):
        from imclass.tasks import get_task
        return get_task(self.meta["task"], self.meta.get("hierarchy_sep", "/"))

    @property
    def thresholds(self) -> list[float] | None:
        return self.meta.get("thresholds")


def load_run(run_dir: str | Path, which: str = "best", device: str = "auto") -> LoadedRun:
    """Rebuild a run's model from its checkpoint (safetensors + JSON sidecar; no pickle)."""
    from imclass import checkpoint
    from imclass.models import build_model
    from imclass.training import resolve_device

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run folder {run_dir} does not exist")
    state, meta = checkpoint.load(run_dir / "checkpoints" / which)
    cfg = config_mod.from_dict(meta["config"])
    dev = resolve_device(device)
    run = LoadedRun(None, meta, cfg, dev)
    model = build_model(cfg.model, meta["input"]["channels"],
                        run.task.num_outputs(len(meta["class_names"])),
                        meta.get("architecture"))
    model.load_state_dict(state)
    run.model = model.to(dev, memory_format=torch.channels_last).eval()
    return run


def evaluate(run_dir: str | Path, *, data_dir: str | Path | None = None, split: str = "test",
             tta: bool = False, quiet: bool = False) -> dict:
    """Re-evaluate a run's best checkpoint on its test (or validation) split, or on the same
    kind of dataset in another folder; rewrites that split's metrics, the plots and the
    report. Returns {"plain": metrics, "tta": metrics (with tta)}."""

    from imclass.data import SOURCES, load_source, prepare

    if split not in ("test", "val"):
        raise ConfigError(f"--split must be test or val; got '{split}'")
    run = load_run(run_dir)
    builtin = run.config.data.source in SOURCES
    # the size the model was trained at (a folder dataset's default is measured, not saved)
    data_cfg = dataclasses.replace(run.config.data, image_size=run.meta["input"]["height"])
    if data_dir is not None:
        data_cfg = dataclasses.replace(data_cfg, **({"data_dir": str(data_dir)} if builtin
                                                    else {"source": str(data_dir)}))
    data = (load_source(data_cfg).test if split == "test"
            else prepare(data_cfg, run.config.train.seed).val)
    if (builtin and data_dir is not None
            and Path(data.source).resolve() != Path(data_dir).resolve()):
        raise DataError(f"{data_dir} holds no {data_cfg.source} dataset (found one only in "
                        f"{data.source}); check the folder")
    if list(data.class_names) != run.class_names:
        raise DataError(f"the classes of {data.source} {list(data.class_names)} differ from "
                        f"the run's {run.class_names}; evaluate on data with the same classes")
    result = _evaluate_on_test(Path(run_dir), run.model, run.task, data, run.norm, run.config,
                               run.device, _log(quiet), split=split, tta=tta,
                               thresholds=run.thresholds)
    write_report(Path(run_dir))
    return result


def read_image(path: str | Path, channels: int, height: int, width: int,
               interpolation: str | None = None) -> torch.Tensor:
    """One image file as uint8 [C, H, W], converted and resized the way training images were."""
    from imclass.data.decode import read_pixels

    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc.strerror or exc}") from None
    array, error = read_pixels(data, (width, height), channels, interpolation=interpolation)
    if array is None:
        raise DataError(f"cannot read image {path}: {error}")
    return torch.from_numpy(array)


def predict(run_dir: str | Path, images: Iterable[str | Path], top_k: int = 3) -> list[dict]:
    """For each image file: the top-k classes with probabilities, and the task's decision
    (binary: the class at the tuned threshold; multilabel: every label over its threshold;
    hierarchical: the path down the tree with each node's probability)."""
    run = load_run(run_dir)
    spec = run.meta["input"]
    paths = list(images)
    if not paths:
        raise ConfigError("give at least one image to predict")
    x = torch.stack([read_image(p, spec["channels"], spec["height"], spec["width"],
                                run.config.data.interpolation)
                     for p in paths]).float().div_(255)
    x = run.norm.apply(x).to(run.device)
    task = run.task
    with torch.no_grad():
        probs = task.probabilities(run.model(x)).cpu().numpy()
    names = run.class_names
    out = []
    for p, row in zip(paths, probs):
        top = row.argsort()[::-1][:min(top_k, len(names))]
        item = {"image": str(p), "top": [{"class": names[i], "probability": float(row[i])}
                                         for i in top]}
        decided = task.predictions(row[None], run.thresholds)[0]
        if task.name == "multilabel":
            item["labels"] = [names[k] for k in np.flatnonzero(decided)]
        elif task.name == "binary":
            item["decision"] = names[int(decided)]
        elif task.name == "hierarchical":
            from imclass.data.labels import ancestors, node_probabilities
            nodes = node_probabilities(row[None], names, task.sep)
            item["path"] = [{"node": n, "probability": float(nodes[n][0])}
                            for n in ancestors(names[int(decided)], task.sep)]
        out.append(item)
    return out
