"""Everything a training run needs before its first file is written: the config checked and
resolved, the data loaded and split, the task chosen, and the model built with its weights.
`imclass train`, `imclass lr-find` and a search's trials all start here, so each fails on bad
input the same way, in one sentence, before a run folder exists."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import torch

from imclass import config as config_mod
from imclass.balance import Balance, class_counts, resolve as resolve_balance
from imclass.config import OWN_MODELS, RunConfig, user_set
from imclass.errors import ConfigError
from imclass.console import Log
from imclass.data import Splits, check_source, prepare, scan
from imclass.data.batches import Normalization, eval_batch_within, training_batch_within
from imclass import cuda_graphs
from imclass.devices import hardware, precision_name, resolve_device
from imclass.budget import plan as budget_plan
from imclass.distributed import SINGLE, Dist, broadcast
from imclass.evaluation import model_flips, model_shift
from imclass.models import MODELS, build_model, check_model_name, count_parameters, \
    flops_per_image
from imclass.models.weights import load_pretrained, resolve_architecture
from imclass.models.zoo import input_spec
from imclass.precision import choose_cpu_precision
from imclass.recipe import Recipe, apply, choose, facts_of
from imclass.tasks import get_task
from imclass.timekeeping import Budget
from imclass.training import selection


@dataclass
class Setup:
    """What a training run needs before its first file is written."""
    cfg: RunConfig
    device: torch.device
    splits: Splits
    task: Any  # a task from imclass.tasks: multiclass, binary, multilabel, hierarchical
    architecture: str
    weights_source: str | None
    recipe: Recipe
    dist: Dist = SINGLE  # this process's place in a distributed run
    balance: Balance | None = None  # how training compensates for imbalanced classes
    budget: Budget | None = None  # --budget: the run's clock
    budget_plan: dict | None = None  # what the budget's probe measured and chose


def check_names(cfg: RunConfig) -> RunConfig:
    """The names looked up in a registry: the dataset (or folder) and the model."""
    check_source(cfg.data.source)
    check_model_name(cfg.model.name)
    return cfg


def prepare_training(config: RunConfig | None, log: Log, dist: Dist = SINGLE,
                     budget: Budget | None = None) -> Setup:
    """Config resolved, the recipe chosen from a scan of the data, data decoded and split,
    task chosen: everything that can fail on bad input fails here, before a run folder
    exists (and a missing pretrained model before a minute of decoding). With --budget the
    recipe is fitted to it (imclass.budget), `budget` its clock (default: from now)."""
    cfg = check_names(config_mod.validate(config or RunConfig()))
    device = dist.device(resolve_device(cfg.train.device))
    if cfg.train.budget and budget is None:
        budget = Budget(cfg.train.budget, time.monotonic())
    cfg, scanned, recipe, architecture, weights_source, measured = plan(
        cfg, device.type, budget if cfg.train.budget else None, dist)
    log(recipe.line(cfg))
    splits = prepare(cfg.data, cfg.train.seed, scanned)
    if weights_source is not None and cfg.model.name not in OWN_MODELS:
        splits = dataclasses.replace(splits, norm=pretrained_norm(architecture,
                                                                  splits.train.channels))
    log(f"data: {len(splits.train)} train / {len(splits.val)} validation / {len(splits.test)} "
        f"test images, {splits.train.channels}x{splits.input_size}x{splits.input_size}"
        f"{f' (decoded at {splits.train.size[0]} px)' if splits.train.size[0] != splits.input_size else ''}, "
        f"{len(splits.train.class_names)} classes ({splits.task}), from {splits.train.source}")
    cfg = batches_for(cfg, splits.input_size, log, recipe.values, device.type)
    cfg, balance = balance_for(cfg, splits, log)
    if not splits.validated:
        check_unvalidated(cfg, recipe, log)
    task = get_task(splits.task, cfg.data.hierarchy_sep)
    return Setup(cfg, device, splits, task, architecture, weights_source, recipe, dist,
                 balance, budget if cfg.train.budget else None, measured)


def balance_for(cfg: RunConfig, splits: Splits, log: Log) -> tuple[RunConfig, Balance]:
    """--balance and --select-metric settled from the training split's class counts (auto:
    balanced when the largest class has over AUTO_RATIO times the smallest's images), said
    on the console when balancing is on; the config then holds the concrete choices, so a
    resumed run or a search's best.yaml trains the same way."""
    train = splits.train
    balance = resolve_balance(cfg.train.balance,
                              class_counts(train.labels, len(train.class_names)), len(train))
    t = dataclasses.replace(cfg.train, balance=balance.method)
    t = dataclasses.replace(t, select_metric=selection(t))
    if balance.method != "none":
        picks = (f"; the best epoch has the best validation {t.select_metric.replace('-', ' ')}"
                 if splits.validated else "")
        log(f"balance: {balance.describe()}{picks}")
    return dataclasses.replace(cfg, train=t), balance


def plan(cfg: RunConfig, device_type: str, budget: Budget | None = None, dist: Dist = SINGLE):
    """The config a run will train with, before any pixel is decoded: the folder scanned,
    the recipe chosen (fitted to a --budget by measuring this machine) and applied, presets
    resolved, the model's input settings. Returns (cfg, the scan or None, recipe,
    architecture, where its weights come from, the budget's measurements or None)."""
    scanned = scan(cfg.data)
    facts = (facts_of(scanned, cfg.data.val_fraction, cfg.data.subset)
             if scanned is not None else None)
    recipe = choose(cfg, facts, device_type)
    measured = None
    if budget is not None:
        outputs = facts.classes if facts is not None else 10
        recipe, measured = budget_plan(cfg, facts, recipe, dist.device(torch.device(
            device_type)), budget, outputs)
        # every process trains to rank 0's plan (each measured with the others running)
        recipe, measured = broadcast(dist, (recipe, measured))
    cfg, recipe = apply(cfg, recipe)
    cfg = config_mod.resolve(cfg)
    model_flips(cfg)  # a --tta without training flips is refused now, not after training
    model_shift(cfg)  # and a --tta-shift without training moves
    architecture, weights_source = resolve_architecture(cfg.model)
    cfg = data_for_model(cfg, architecture)
    check_train_size(cfg)
    return cfg, scanned, recipe, architecture, weights_source, measured


def check_train_size(cfg: RunConfig) -> None:
    """--train-size and --early-size work through the random resized crops, which they make
    smaller than the input: refused without them, or above the input's side (the early side
    below the training side, with --early-epochs to use it)."""
    side, given, early = cfg.data.train_size, cfg.data.image_size, cfg.data.early_size
    if cfg.train.early_epochs and early is None:
        raise ConfigError(f"--early-epochs {cfg.train.early_epochs} trains its epochs on "
                          "--early-size crops; give --early-size (e.g. 128)")
    for flag, value in (("--train-size", side), ("--early-size", early)):
        if value is not None and not cfg.augment.crop_scale:
            raise ConfigError(f"{flag} {value} sets the side of training's random resized "
                              f"crops, and augment '{cfg.augment.preset}' takes none; give "
                              f"--crop-scale (e.g. 0.35) or --augment photo, or leave {flag} "
                              "unset")
    if side is not None and given and side > given:
        raise ConfigError(f"--train-size {side} is above the input side ({given} px, "
                          "--image-size): give a train size at most that")
    if early is not None and given and early >= (side or given):
        raise ConfigError(f"--early-size {early} is not below the training side "
                          f"({side or given} px): give a smaller early size")
    if early is not None and not cfg.train.early_epochs and "early_size" in cfg.explicit:
        raise ConfigError(f"--early-size {early} sets the crops of the first epochs; give "
                          "--early-epochs N (how many)")


def check_unvalidated(cfg: RunConfig, recipe: Recipe, log: Log) -> None:
    """A run on every training image (--val-fraction 0): what it gives up, said once; an
    early-stopping patience the user asked for is refused, as it has nothing to watch."""
    if cfg.train.patience and "patience" in user_set(cfg) - set(recipe.values):
        raise ConfigError(f"--patience {cfg.train.patience} stops on validation loss, and "
                          "--val-fraction 0 holds no images out; give --val-fraction above 0 "
                          "or leave --patience unset")
    given = "val_fraction" in user_set(cfg) - set(recipe.values)
    log(f"no validation ({'--val-fraction 0' if given else recipe.name + ' recipe'}): the last "
        "epoch is kept, with no early stopping, overfitting warnings or threshold tuning")


def batches_for(cfg: RunConfig, input_size: int, log: Log, recipe: dict | None = None,
                device_type: str = "cpu") -> RunConfig:
    """Training and evaluation batches within TRAIN_ and EVAL_BATCH_PIXELS where the user left
    them unset (the learning rate scaled with the training batch, the linear rule, where it
    was left unset too); said on the console when the training batch changes. A recipe's
    training batch (`recipe`: the values it gave) is kept where it chose the size too (not
    for a --image-size of the user's: the scratch recipe's 128 is meant for 64 px and
    below); so is a GPU's, whose memory (and bf16 activations) holds a large batch and whose
    speed needs one."""
    recipe = recipe or {}
    t, given = cfg.train, user_set(cfg) - (set(recipe) - cfg.explicit)
    if {"batch_size", "image_size"} <= set(recipe) or device_type != "cpu":
        given = given | {"batch_size"}
    pixels = max(1, input_size) ** 2
    fits = {"batch_size": training_batch_within(input_size),
            "eval_batch_size": eval_batch_within(input_size)}
    changes = {key: fits[key] for key in fits
               if key not in given and getattr(t, key) > fits[key]}
    if "batch_size" in changes:
        if "lr" not in given and isinstance(t.lr, float):
            changes["lr"] = t.lr * changes["batch_size"] / t.batch_size
        lr = f", lr {changes['lr']:g}" if "lr" in changes else ""
        log(f"batch: {changes['batch_size']} images at {input_size} px, not {t.batch_size}{lr} "
            f"(a batch's memory grows with its pixels: {t.batch_size} would hold about "
            f"{t.batch_size * pixels * 78 / 224 ** 2 / 1024:.0f} GB on a model like "
            "EfficientNet-Lite0); --batch-size sets it")
    if not changes:
        return cfg
    return dataclasses.replace(cfg, train=dataclasses.replace(t, **changes))


def data_for_model(cfg: RunConfig, architecture: str) -> RunConfig:
    """A timm model's input size and resampling, where the config leaves them unset."""
    if cfg.model.name in MODELS:
        return cfg
    spec = input_spec(architecture)
    data = dataclasses.replace(cfg.data, image_size=cfg.data.image_size or spec.size,
                               interpolation=cfg.data.interpolation or spec.interpolation)
    return dataclasses.replace(cfg, data=data)


def pretrained_norm(architecture: str, channels: int) -> Normalization:
    """The normalisation the weights were trained with (averaged over RGB for greyscale data,
    which the first convolution sees summed over its RGB filters)."""
    spec = input_spec(architecture)
    if channels == 1:
        return Normalization((sum(spec.mean) / 3,), (sum(spec.std) / 3,))
    return Normalization(spec.mean, spec.std)


def build_run_model(setup: Setup, log: Log) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model (with its pretrained or local weights) on its device, and its size.
    `--precision auto` on a CPU is settled here, by measuring this model (imclass.precision):
    `setup.cfg` then holds bf16 or fp32."""
    cfg, splits = setup.cfg, setup.splits
    shape = (splits.train.channels, splits.input_size, splits.input_size)
    model = build_model(cfg.model, shape[0],
                        setup.task.num_outputs(len(splits.train.class_names)),
                        setup.architecture)
    loaded = load_pretrained(model, cfg.model, setup.weights_source)
    if loaded is not None:
        log(loaded.summary())
    model = model.to(setup.device, memory_format=torch.channels_last)
    info = {"name": cfg.model.name, "architecture": setup.architecture,
            "parameters": count_parameters(model), "flops_per_image": flops_per_image(model, shape),
            "weights": loaded.as_dict() if loaded else None}
    why = ""
    # (a distributed run's ranks keep the rule of devices.mixed_precision: they must agree)
    if setup.device.type == "cpu" and cfg.train.precision == "auto" and not setup.dist.active:
        side = cfg.data.training_side(splits.input_size)  # timed on what it trains on
        chosen, why = choose_cpu_precision(
            model, f"{setup.architecture or cfg.model.name} ({info['parameters']} parameters)",
            (shape[0], side, side), cfg.train.batch_size, len(splits.train.class_names))
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, precision=chosen))
        setup.cfg, info["precision_reason"] = cfg, why
    graphs = settle_cuda_graphs(setup, info, log)
    cfg = setup.cfg
    log(f"model: {setup.architecture}, {info['parameters']:,} parameters, "
        f"{info['flops_per_image'] / 1e6:.1f} MFLOPs per image; training on "
        f"{hardware(setup.device)}, {precision_name(setup.device, cfg.train.precision)}"
        f"{f' ({why})' if why else ''}"
        f"{', CUDA graphs (' + info['cuda_graphs'] + ')' if graphs else ''}")
    return model, info


def example_batch(setup: Setup, device: torch.device, images: int = 2) -> torch.Tensor:
    """Random normalised-looking images of the run's input shape, drawn without touching the
    global generator (the run's seed draws the weights and the augmentation)."""
    splits = setup.splits
    shape = (images, splits.train.channels, splits.input_size, splits.input_size)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    return x.to(device, memory_format=torch.channels_last)


def settle_cuda_graphs(setup: Setup, info: dict, log: Log) -> bool:
    """--cuda-graphs auto or on settled to on or off in `setup.cfg` (imclass.cuda_graphs), the
    reason in `info`; an `on` that cannot be is said and skipped."""
    t = setup.cfg.train
    graphs, info["cuda_graphs"] = cuda_graphs.decide(
        t.cuda_graphs, setup.device, setup.cfg.model.name, setup.dist.active, t.compile)
    if t.cuda_graphs == "on" and not graphs:
        log(f"--cuda-graphs on skipped: {info['cuda_graphs']}")
    setup.cfg = dataclasses.replace(setup.cfg, train=dataclasses.replace(
        t, cuda_graphs="on" if graphs else "off"))
    return graphs
