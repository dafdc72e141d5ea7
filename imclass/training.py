"""The training loop: one epoch function, one validate function, and `fit` over epochs.

Everything else (progress bar, early stopping, overfitting warning, checkpoints, history file)
hangs off a small fixed set of events. A callback is called as `callback(event, info)` with
event one of "epoch_start", "batch_end", "epoch_end", "final_epoch", "train_end"; returning
"stop" from "epoch_end" ends training after that epoch. "final_epoch" follows the epoch_end of
the epoch that ends training (its planned last, early stopping, the budget's clock; not a stop
signal), before the resume state says the run finished, so files written at a pace are
complete by then.
"""

from __future__ import annotations

import copy
import math
import os
import signal
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from imclass import resume as resume_mod
from imclass.config import TrainConfig
from imclass.cuda_graphs import GraphedForward
from imclass.devices import autocast, compiled
from imclass.distributed import SINGLE, Dist, all_sum, any_rank, wrapper
from imclass.features import CachedHead
from imclass.finetune import FROZEN_EPOCH_COST, apply_stage, plan_stages, train_mode
from imclass.prefix_cache import frozen_validation, validation_chains
from imclass.tasks import Loss, argmax_hits
from imclass.timekeeping import Deadline, Pace, TimedSchedule

Callback = Callable[[str, dict], Any]


def make_optimizer(model_or_groups, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser over a model's trainable parameters at cfg.lr, or over (parameters, lr)
    layer groups, each at its own rate."""
    if isinstance(model_or_groups, nn.Module):
        model_or_groups = [(list(model_or_groups.parameters()), cfg.lr)]
    groups = []
    for params, lr in model_or_groups:
        # Weight decay on conv and linear weights only: decaying BatchNorm scales and biases
        # just fights the normalisation.
        decay = [p for p in params if p.requires_grad and p.ndim > 1]
        rest = [p for p in params if p.requires_grad and p.ndim <= 1]
        groups += [{"params": ps, "weight_decay": wd, "lr": lr}
                   for ps, wd in ((decay, cfg.weight_decay), (rest, 0.0)) if ps]
    # One fused kernel updates every parameter, on a GPU (else a few launches per tensor
    # group) and on a CPU: torch's default there loops over the tensors in Python. A step of
    # AdamW over Lite0's 149 tensors took 13.5 ms looped, 2.9 ms fused (Xeon, 2 cores,
    # 2026-12-07: 1.6 s of a 46-s run of 300 images); SGD over our cnn 0.43 against 0.15 ms.
    # (RMSprop has no fused kernel.)
    fused = {"fused": True} if all(
        p.device.type in ("cpu", "cuda") for g in groups for p in g["params"]) else {}
    optimizers = {
        "sgd": lambda: torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                                       nesterov=cfg.momentum > 0, **fused),
        "adam": lambda: torch.optim.Adam(groups, lr=cfg.lr, **fused),
        "adamw": lambda: torch.optim.AdamW(groups, lr=cfg.lr, **fused),
        "rmsprop": lambda: torch.optim.RMSprop(groups, lr=cfg.lr, momentum=cfg.momentum),
    }
    return optimizers[cfg.optimizer]()


def make_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    """A per-step learning-rate schedule over a stage, peaking at each group's own rate."""
    peaks = [g["lr"] for g in optimizer.param_groups]
    # OneCycleLR divides by the steps of each phase: a warm-up of exactly one step (4 steps at
    # 0.25) or of them all is a ZeroDivisionError, so a run of a few steps warms up for at
    # least 1.5 steps and leaves at least half a step of annealing; one step is constant.
    warmup = min(max(cfg.warmup_fraction, 1.5 / total_steps), 1 - 0.5 / total_steps)
    schedules = {
        "onecycle": lambda: torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=peaks, total_steps=total_steps, pct_start=warmup)
        if total_steps > 1 else torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
        "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total_steps),
        "constant": lambda: torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
    }
    return schedules[cfg.schedule]()


def timed_schedule(optimizer, cfg: TrainConfig, total_steps: int, deadline: Deadline,
                   dist: Dist = SINGLE) -> TimedSchedule:
    """The schedule of a budget run's last stage: over its steps or until the deadline,
    whichever comes first; several processes share one clock (the mean of their shares)."""
    agree = (lambda share: all_sum(dist, [share])[0] / dist.world) if dist.active else (
        lambda share: share)
    return TimedSchedule(optimizer, cfg.schedule, cfg.warmup_fraction, total_steps,
                         deadline.left(), deadline.clock, agree)


def l1_penalty(model: nn.Module) -> torch.Tensor:
    return sum(p.abs().sum() for p in model.parameters() if p.ndim > 1)


Hits = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # batch -> summed accuracy


class StopSignal:
    """Ctrl-C (SIGINT) or SIGTERM while training: the first asks the loop to stop after the
    current batch (the run then keeps and evaluates what it learned); a second one stops at
    once, as without this handler. Installed in the main thread only (signal's rule)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict = {}

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self.previous[s] = signal.signal(s, self.handle)
        return self

    def handle(self, signum, frame) -> None:
        if self.signum is not None:  # the second one: out now (files are written atomically)
            self.__exit__()
            raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)
        self.signum = signum
        if os.environ.get("RANK", "0") == "0":  # in a distributed run, rank 0 speaks
            print(f"\nimclass: {signal.Signals(signum).name}: stopping after this batch "
                  "(again to stop at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None


def train_one_epoch(model, batches, optimizer, scheduler, loss_fn: Loss, cfg: TrainConfig,
                    device: torch.device, emit: Callable[[str, dict], Any] = lambda e, i: None,
                    hits: Hits = argmax_hits, stop: StopSignal | None = None,
                    partial: dict | None = None,
                    on_batch: Callable[[dict], None] | None = None,
                    dist: Dist = SINGLE,
                    after_step: Callable[[], None] | None = None,
                    time_up: Callable[[], bool] | None = None) -> dict[str, float]:
    """One pass over `batches` (cut short when `stop` is requested); returns mean loss,
    accuracy, images/s and seconds. `partial` (a resumed epoch: the batches done and their
    sums, as `on_batch` got them after each batch) continues a pass in the middle; the
    batches must then be imclass.data.Batches, which can skip its first batches.
    In a distributed run `model` is the DDP wrapper, `batches` this rank's slices, and the
    figures returned are those of all ranks together. `time_up` (a budget run's timed
    schedule, the same on every rank) ends the pass early once it says so."""
    train_mode(model)
    partial = partial or {"step": 0, "loss_sum": 0.0, "correct": 0.0, "seen": 0,
                          "seconds": 0.0}
    batches_to_skip = partial["step"]
    if batches_to_skip:
        batches.skip = batches_to_skip
    start = time.perf_counter() - partial["seconds"]
    loss_sum = torch.tensor(partial["loss_sum"], dtype=torch.float32, device=device)
    correct = torch.tensor(partial["correct"], dtype=torch.float32, device=device)
    seen = partial["seen"]
    for step, (x, y) in enumerate(batches, start=batches_to_skip):
        with autocast(device, cfg.precision):
            logits = model(x)
            loss = loss_fn(logits.float(), y)
        total = loss + cfg.l1 * l1_penalty(model) if cfg.l1 else loss
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        scheduler.step()
        if after_step is not None:
            after_step()
        loss_sum += loss.detach() * len(y)
        correct += hits(logits.detach(), y)
        seen += len(y)
        emit("batch_end", {"step": step + 1, "steps": len(batches), "seen": seen,
                           "loss_sum": loss_sum, "correct": correct,
                           "seconds": time.perf_counter() - start})
        if stop is not None and any_rank(dist, stop.requested):
            break
        if time_up is not None and time_up():
            break
        if on_batch is not None and step + 1 < len(batches):
            on_batch({"step": step + 1, "loss_sum": loss_sum, "correct": correct, "seen": seen,
                      "seconds": time.perf_counter() - start})
    seconds = time.perf_counter() - start
    loss_total, correct_total, seen = all_sum(dist, [loss_sum.item(), correct.item(), seen])
    return {"loss": loss_total / seen, "acc": correct_total / seen,
            "images_per_s": seen / seconds, "seconds": seconds}


@torch.no_grad()
def validate(model, batches, loss_fn: Loss, device: torch.device, hits: Hits = argmax_hits,
             dist: Dist = SINGLE, precision: str | None = None,
             scorer=None) -> dict[str, float]:
    """Mean loss and accuracy over `batches` (in a distributed run, over every rank's share:
    each image counted once); `precision` as in imclass.devices.autocast. With `scorer` (a
    task of imclass.tasks) also the balanced accuracy and macro F1 ("balanced_acc",
    "macro_f1"), from per-class counts summed over the batches."""
    model.eval()
    # sums kept on the device, read once at the end (not a wait for the GPU per batch)
    loss_sum = correct = torch.zeros((), dtype=torch.float64)
    seen, tally = 0, 0
    for x, y in batches:
        with autocast(device, precision):
            logits = model(x).float()
        loss_sum = loss_fn(logits, y).double() * len(y) + loss_sum.to(logits.device)
        correct = hits(logits, y).double() + correct.to(logits.device)
        seen += len(y)
        if scorer is not None:
            tally = tally + scorer.tally(logits, y)
    loss_sum, correct, seen = all_sum(dist, [loss_sum.item(), correct.item(), seen])
    out = {"loss": loss_sum / seen, "acc": correct / seen}
    if scorer is not None and seen:
        out |= scorer.scores(all_sum(dist, tally.cpu().tolist()))
    return out


# --select-metric: the validation figure that picks the best epoch, and its history column.
SELECT_COLUMNS = {"loss": "val_loss", "accuracy": "val_acc",
                  "balanced-accuracy": "val_balanced_acc", "macro-f1": "val_macro_f1"}


def selection(cfg: TrainConfig) -> str:
    """The select metric, auto resolved: balanced accuracy when classes are balanced by
    weights or sampling, else the validation loss."""
    if cfg.select_metric != "auto":
        return cfg.select_metric
    return "loss" if cfg.balance in ("none", "auto") else "balanced-accuracy"


def search_score(record: dict, metric: str) -> float:
    """What a search maximises of an epoch's record: the selected figure, or validation
    accuracy when the loss selects (a loss is not comparable across trials' settings)."""
    return record["val_acc" if metric == "loss" else SELECT_COLUMNS[metric]]


def mark_best(history: list[dict], cfg: TrainConfig) -> list[dict]:
    """The history with "best" true on the epoch `fit` kept (by cfg's select metric), for the
    curves to mark; none without validation."""
    metric, best, kept = selection(cfg), {}, None
    for h in history:
        if not math.isnan(h["val_loss"]) and improves(h, best, metric, cfg.min_delta):
            best, kept = h, h["epoch"]
    return [{**h, "best": h["epoch"] == kept} for h in history]


def improves(val: dict, best: dict, metric: str, min_delta: float) -> bool:
    """Whether this validation (val_* keys) beats the best so far: a lower loss, or a higher
    figure (on a tie, a lower loss: small validation sets tie often)."""
    if metric == "loss":
        return val["val_loss"] < best.get("val_loss", math.inf) - min_delta
    key = SELECT_COLUMNS[metric]
    score, held = val[key], best.get(key, -math.inf)
    return score > held + min_delta or (score == held and
                                        val["val_loss"] < best.get("val_loss", math.inf))


def weight_average(model: nn.Module, decay: float | None) -> "WeightAverage | None":
    """An exponential moving average of `model`'s weights and buffers (BatchNorm statistics)
    for `fit` to update after every step, or None when `decay` is unset."""
    return None if decay is None else WeightAverage(model, decay)


class WeightAverage(nn.Module):
    """A moving average of a model's weights and buffers; its `.module` is a copy of the model
    holding the average. After its n-th update the average keeps min(decay, (1 + n) / (10 + n))
    of itself, as TensorFlow's ExponentialMovingAverage with num_updates, so that early on, and
    in a short run of a few hundred steps (a small folder), it follows the weights instead of
    holding on to the first ones.

    The state_dict is torch.optim.swa_utils.AveragedModel's (`module.*`, `n_averaged`), which
    this replaces: AveragedModel reads its count back from the device twice a step (a wait
    for the GPU every step) and updates tensor by tensor; here the count lives on the host
    and one update is two foreach operations, whatever the model's size."""

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        self.module = copy.deepcopy(model)
        self.decay = decay
        device = next(model.parameters()).device
        self.register_buffer("n_averaged", torch.tensor(0, dtype=torch.long, device=device))
        self.updates = 0  # n_averaged, as the host knows it

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        pairs = list(zip([*self.module.parameters(), *self.module.buffers()],
                         [*model.parameters(), *model.buffers()]))
        floats = [pair for pair in pairs if pair[0].is_floating_point()]
        counts = [pair for pair in pairs if not pair[0].is_floating_point()]  # BatchNorm's
        if self.updates == 0 or not floats:
            torch._foreach_copy_(*map(list, zip(*pairs)))
        else:
            n = self.updates
            kept = min(self.decay, (1 + n) / (10 + n))
            torch._foreach_lerp_(*map(list, zip(*floats)), 1 - kept)
            if counts:
                torch._foreach_copy_(*map(list, zip(*counts)))
        self.updates += 1
        self.n_averaged.add_(1)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        loaded = super().load_state_dict(state_dict, strict, assign)
        self.updates = int(self.n_averaged)
        return loaded


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    stopped_early: bool = False
    stages: list[dict] = field(default_factory=list)
    stopped_by: str | None = None    # SIGINT or SIGTERM: the user stopped the run
    stopped_in_epoch: int | None = None  # the epoch that was cut short (not counted)
    stopped_by_budget: bool = False  # --budget: its time ran out before the planned epochs


def fit(model: nn.Module, train_batches, val_batches, loss_fn: Loss, cfg: TrainConfig,
        device: torch.device, callbacks: list[Callback] = (), hits: Hits = argmax_hits,
        stop: StopSignal | None = None, on_state: Callable[[dict], None] | None = None,
        resume: dict | None = None, dist: Dist = SINGLE, ema=None,
        features=None, scorer=None, deadline: Deadline | None = None) -> FitResult:
    """Train for cfg.epochs (or until a callback says stop), in stages when fine-tuning
    (imclass.finetune); ends holding the best weights, those of the epoch with the lowest
    validation figure (with `val_batches` None, no validation: the last epoch's). A "stop"
    during the frozen stage moves on to fine-tuning. A `stop`
    signal ends it after the current batch; that epoch is dropped (no validation, no
    checkpoint) and the best of the finished epochs is kept.

    After an epoch (paced: StateSaver) `on_state` gets what a resumed run needs (the
    optimizer, scheduler, where the loop is, the result so far); `resume`
    (imclass.resume.load's dict, model weights and generators already restored by the
    caller) continues from such a state.

    In a distributed run (`dist`) the model trains through DistributedDataParallel, each
    rank's random stream (augmentation, dropout) is reseeded per epoch from the seed, the
    epoch and the rank (so a resumed run draws what an uninterrupted one would), and the
    state is saved at epoch ends only.

    With `ema` (`weight_average`'s average of `model`, its state restored by the caller on
    resume) the average is updated after every step, and it is what is validated and kept as
    the best weights.

    With `features` (imclass.features.FeatureCache) a stage planned `cached` (the frozen
    stage, with --feature-views) trains and validates the head on the backbone's cached
    features instead of images.

    The best epoch is the one with the best validation figure named by cfg.select_metric
    (`selection`): the lowest loss, or the highest accuracy, balanced accuracy or macro F1,
    the last two counted by `scorer` (the run's task).

    With `deadline` (a budget run) the last stage's schedule follows the clock
    (imclass.timekeeping.TimedSchedule) and training ends by the deadline, the epoch it cuts
    short validated and kept like any other; a stage that would start after it is skipped."""
    metric = selection(cfg)
    if metric in ("balanced-accuracy", "macro-f1") and scorer is None:
        raise ValueError(f"select metric {metric} needs the task as scorer")
    result = FitResult()
    best_state = None
    epoch = 0
    start_stage, done_in_stage, partial = 0, 0, None
    if resume is not None:
        loop = resume["loop"]
        result.history, result.stages = loop["history"], loop["stages"]
        result.best_epoch, result.best_val_loss = loop["best_epoch"], loop["best_val_loss"]
        best_state, epoch = resume["best"], loop["epoch"]
        start_stage, done_in_stage = loop["stage_index"], loop["epochs_in_stage"]
        partial = loop.get("mid_epoch")
        if loop["stage_finished"]:
            start_stage, done_in_stage = start_stage + 1, 0
    evaluated = model if ema is None else ema.module
    after_step = None if ema is None else (lambda: ema.update_parameters(model))
    saver = StateSaver(on_state, 0 if dist.active else cfg.checkpoint_minutes)
    wrap = wrapper(dist, device)

    def emit(event: str, info: dict) -> list:
        return [cb(event, info) for cb in callbacks]

    stages = plan_stages(model, cfg)
    # the frozen layers' output for the validation images is computed once a stage
    chains = validation_chains(model, evaluated, val_batches) if len(stages) > 1 else None
    if resume is None:
        result.stages = [{"name": st.name, "number": st.number, "first_epoch": 0,
                          "epochs": st.epochs, "peak_lr": st.groups[0][1],
                          "lowest_lr": st.groups[-1][1]} for st in stages]
    finished = resume is not None and resume["loop"]["finished"]
    for index, (stage, summary) in enumerate(zip(stages, result.stages)):
        if finished or index < start_stage:
            continue
        apply_stage(model, stage)
        stage_train, stage_val, stage_evaluated = train_batches, val_batches, evaluated
        if stage.cached and features is not None:
            if features.train is None:
                features.build(model)
            net = CachedHead(model, features.dropout)
            stage_train, stage_val = features.train, features.val
            stage_evaluated = CachedHead(evaluated, 0.0)
        else:  # after apply_stage: DDP reduces the gradients that train now
            net = compiled(wrap(model), cfg.compile)
            stage_evaluated, stage_val = frozen_validation(evaluated, chains, val_batches, device,
                                                           cfg.precision)
            if cfg.cuda_graphs == "on":  # recorded anew each stage: what trains changes
                net = GraphedForward(net)
        if deadline is not None and any_rank(dist, deadline.passed()):
            result.stopped_by_budget = True
            break
        optimizer = make_optimizer(stage.groups, cfg)
        timed = deadline is not None and stage is stages[-1]
        scheduler = (timed_schedule(optimizer, cfg, stage.epochs * len(stage_train), deadline,
                                    dist)
                     if timed else make_schedule(optimizer, cfg, stage.epochs * len(stage_train)))
        # a budget's earlier stages (the frozen head) keep their steps, within the deadline
        time_up = ((lambda: scheduler.done) if timed else None if deadline is None
                   else (lambda: any_rank(dist, deadline.passed())))
        already = 0
        if resume is not None and index == start_stage and (done_in_stage or partial):
            resume_mod.load_optimizer(optimizer, resume["optimizer"])
            scheduler.load_state_dict(resume["loop"]["scheduler"])
            already = done_in_stage
        else:
            summary["first_epoch"] = epoch + 1
        for in_stage in range(already + 1, stage.epochs + 1):
            epoch += 1
            lr = partial["lr"] if partial else optimizer.param_groups[0]["lr"]
            emit("epoch_start", {"epoch": epoch, "epochs": cfg.epochs,
                                 "steps": len(stage_train),
                                 "first_step": partial["step"] if partial else 0})
            saver.where = {"epoch": epoch - 1, "stage_index": index,
                           "epochs_in_stage": in_stage - 1, "stage_finished": False,
                           "finished": False, "optimizer": optimizer, "scheduler": scheduler,
                           "result": result, "best": best_state, "lr": lr}
            if dist.active:
                torch.manual_seed(cfg.seed * 1_000_003 + epoch * 1009 + dist.rank)
            if stage_train is not train_batches:
                stage_train.epoch = epoch
            train = train_one_epoch(net, stage_train, optimizer, scheduler, loss_fn, cfg,
                                    device, emit, hits, stop, partial, saver, dist,
                                    after_step, time_up)
            partial = None
            if stop is not None and any_rank(dist, stop.requested):
                result.stopped_by = signal.Signals(stop.signum or signal.SIGTERM).name
                result.stopped_in_epoch = epoch
                break
            if not math.isfinite(train["loss"]):
                from imclass.errors import ImclassError
                raise ImclassError(f"training diverged at epoch {epoch} (the loss is "
                                   f"{train['loss']}); lower --lr (now {cfg.lr:g}) or use "
                                   "--optimizer adamw")
            val = {"loss": math.nan, "acc": math.nan}  # no validation: each epoch is the best
            if val_batches is not None:
                val = validate(stage_evaluated, stage_val, loss_fn, device, hits, dist,
                               cfg.precision, scorer)
            val = {"val_loss": val["loss"], "val_acc": val["acc"],
                   "val_balanced_acc": val.get("balanced_acc", math.nan),
                   "val_macro_f1": val.get("macro_f1", math.nan)}
            improved = val_batches is None or improves(
                val, result.history[result.best_epoch - 1] if result.best_epoch else {},
                metric, cfg.min_delta)
            if improved:
                result.best_epoch, result.best_val_loss = epoch, val["val_loss"]
                best_state = copy.deepcopy(evaluated.state_dict())
            record = {"epoch": epoch, "train_loss": train["loss"], "train_acc": train["acc"],
                      **val, "select_metric": metric, "val_score": search_score(val, metric),
                      "lr": lr, "seconds": train["seconds"],
                      "images_per_s": train["images_per_s"],
                      "stage": stage.number, "improved": improved,
                      # a later stage gets its own patience to beat the best before it
                      "epochs_since_best": epoch - max(result.best_epoch,
                                                       summary["first_epoch"] - 1),
                      "epochs": cfg.epochs}
            result.history.append(record)
            stop_asked = "stop" in emit("epoch_end", record)
            if stop_asked:
                result.stopped_early = stage is stages[-1] and epoch < cfg.epochs
            elif time_up is not None and time_up() and not (
                    stage is stages[-1] and in_stage == stage.epochs):
                stop_asked = result.stopped_by_budget = True
            finished = result.stopped_early or result.stopped_by_budget or (
                index == len(stages) - 1 and in_stage == stage.epochs)
            if finished:
                emit("final_epoch", {"epoch": epoch})
            if saver.due_at_epoch_end(finished):
                saver.save({"epoch": epoch, "stage_index": index, "epochs_in_stage": in_stage,
                            "stage_finished": stop_asked or in_stage == stage.epochs,
                            "finished": finished, "optimizer": optimizer,
                            "scheduler": scheduler, "result": result, "best": best_state,
                            "mid_epoch": None})
            if stop_asked:
                break
        if result.stopped_early or result.stopped_by or result.stopped_by_budget:
            break
    for p in model.parameters():
        p.requires_grad_(True)
    if best_state is not None:
        model.load_state_dict(best_state)
    emit("train_end", {"best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
                       "best_weights": best_state})
    return result


class StateSaver:
    """When `on_state` gets the resume state. At an epoch's end: always at the last one (or
    with `minutes` 0, at every one), else when its Pace says (at most every `minutes`).
    Inside an epoch (each batch calls it): once `minutes` have passed since the last write,
    so a long epoch loses at most that much when killed. `where` is set by `fit` before each
    epoch: the loop's place and the state it owns; the epoch's own sums come with each
    batch."""

    def __init__(self, on_state: Callable[[dict], None] | None, minutes: float):
        self.on_state = on_state
        self.every_s = minutes * 60
        self.where: dict = {}
        self.pace = Pace(self.every_s)

    def save(self, info: dict) -> None:
        self.pace.timed(lambda: self.on_state(info))

    def due_at_epoch_end(self, finished: bool) -> bool:
        return self.on_state is not None and (finished or not self.every_s or self.pace.due())

    def __call__(self, partial: dict) -> None:
        if self.on_state is None or not self.every_s or self.pace.since_last() < self.every_s:
            return
        where = dict(self.where)
        mid = {**partial, "loss_sum": partial["loss_sum"].item(),
               "correct": partial["correct"].item(), "lr": where.pop("lr")}
        self.save({**where, "mid_epoch": mid})


class EarlyStopping:
    """Says stop once the validation figure has not improved for `patience` epochs."""

    def __init__(self, patience: int | None):
        self.patience = patience

    def __call__(self, event: str, info: dict):
        if event == "epoch_end" and self.patience and info["epochs_since_best"] >= self.patience:
            return "stop"
        return None


class OverfitWatch:
    """Warns when validation loss has risen while training loss fell for `epochs` epochs.
    Every such epoch is recorded (`warnings`: the report tells the whole story); the console
    hears of it once, and again only when the validation loss has risen above its lowest by
    twice as much as when it last did (a run that overfits for ten epochs gets a line or two,
    not ten)."""

    def __init__(self, epochs: int, log: Callable[[str], None]):
        self.epochs, self.log = epochs, log
        self.streak = 0
        self.previous: dict | None = None
        self.warnings: list[dict] = []
        self.said_at_loss: float | None = None  # validation loss when last said
        self.lowest = math.inf  # the lowest validation loss so far

    def __call__(self, event: str, info: dict):
        if event != "epoch_end":
            return None
        if math.isnan(info["val_loss"]):  # no validation: nothing to compare
            return None
        prev, self.previous = self.previous, info
        self.lowest = min(self.lowest, info["val_loss"])
        diverging = (prev is not None and info["val_loss"] > prev["val_loss"]
                     and info["train_loss"] < prev["train_loss"])
        self.streak = self.streak + 1 if diverging else 0
        if self.streak >= self.epochs - 1 and diverging:
            message = (f"possible overfitting at epoch {info['epoch']}: validation loss has "
                       f"risen for {self.streak} epochs while training loss fell; consider "
                       "more augmentation, dropout or weight decay, or fewer epochs")
            self.warnings.append({"epoch": info["epoch"], "message": message})
            said = self.said_at_loss
            if said is None or info["val_loss"] - self.lowest >= 2 * (said - self.lowest):
                self.log("warning: " + message)
                self.said_at_loss = info["val_loss"]
        return None


def epoch_costs(cfg: TrainConfig, side: int, early_side: int | None = None) -> list[float]:
    """Each epoch's expected seconds relative to a fine-tuning epoch at `side`, for the time
    left a run prints: a frozen-backbone epoch FROZEN_EPOCH_COST (forward only through the
    backbone), an epoch on --early-size crops the share of the pixels. The first epochs of the
    photo recipe cost a fifth of its later ones, so a mean over the epochs so far would
    promise a fifth of the wait."""
    early = (early_side / side) ** 2 if early_side and cfg.early_epochs else 1.0
    return [(FROZEN_EPOCH_COST if epoch <= cfg.freeze_epochs else 1.0)
            * (early if epoch <= cfg.early_epochs else 1.0) for epoch in range(1, cfg.epochs + 1)]


class Progress:
    """A tqdm bar per epoch with live loss, accuracy and throughput, and a line per epoch.
    The bar only on a terminal: in a log file (CI, `> log.txt`) its redraws would be noise,
    so there each epoch is its one line. The time left counts each epoch still to come at
    what the epochs of its kind took (`costs`: its expected cost relative to the others;
    a kind not seen yet is priced from the cost ratios)."""

    # Seconds between readings of the running loss and accuracy: each reading copies them
    # from the device, which waits for every step queued (a GPU runs ahead of the host).
    READ_EVERY_S = 0.5

    def __init__(self, enabled: bool = True, stream=None, clock=time.perf_counter,
                 costs: list[float] | None = None):
        stream = stream or sys.stderr
        self.enabled, self.stream, self.clock = enabled, stream, clock
        self.live = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.bar = None
        self.last_read = clock()
        self.costs = costs or []
        self.last_end: float | None = None  # when the last epoch ended (its checkpoints next)
        self.took: dict[float, list[float]] = {}  # seconds of each epoch, by its cost

    def cost(self, epoch: int) -> float:
        return self.costs[epoch - 1] if epoch <= len(self.costs) else 1.0

    def seconds_left(self, epoch: int, epochs: int) -> float:
        """The epochs after `epoch`, each at the mean of its kind's, or priced by its cost."""
        seen = [(cost, s) for cost, times in self.took.items() for s in times]
        per_cost = sum(s for _, s in seen) / max(1e-9, sum(cost for cost, _ in seen))
        left = (self.cost(e) for e in range(epoch + 1, epochs + 1))
        return sum(statistics.fmean(self.took[c]) if c in self.took else c * per_cost
                   for c in left)

    def __call__(self, event: str, info: dict):
        if not self.enabled:
            return None
        from tqdm import tqdm
        if event == "epoch_start" and self.last_end is None:
            self.last_end = self.clock()  # the first epoch of this process (a resumed run's too)
        if event == "epoch_start" and self.live:
            self.bar = tqdm(total=info["steps"], desc=f"epoch {info['epoch']}/{info['epochs']}",
                            unit="batch", file=self.stream, leave=False, dynamic_ncols=True,
                            initial=info.get("first_step", 0))
        elif event == "batch_end" and self.bar is not None:
            self.bar.update(1)
            if self.clock() - self.last_read >= self.READ_EVERY_S:
                self.last_read = self.clock()
                seen = info["seen"]
                self.bar.set_postfix(loss=f"{info['loss_sum'].item() / seen:.4f}",
                                     acc=f"{info['correct'].item() / seen:.4f}",
                                     img_s=f"{seen / info['seconds']:.0f}", refresh=False)
        elif event == "train_end" and self.bar is not None:  # an epoch cut short
            self.bar.close()
            self.bar = None
        elif event == "epoch_end":
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            now = self.clock()
            self.took.setdefault(self.cost(info["epoch"]), []).append(now - self.last_end)
            self.last_end = now
            eta = self.seconds_left(info["epoch"], info["epochs"])
            mark = " *" if info["improved"] else ""
            val = ("no validation" if math.isnan(info["val_loss"]) else
                   f"val loss {info['val_loss']:.4f} acc {info['val_acc']:.4f}")
            shown = {"balanced-accuracy": "balanced acc", "macro-f1": "macro F1"}.get(
                info.get("select_metric"))
            if shown and not math.isnan(info["val_loss"]):
                val += f" {shown} {info['val_score']:.4f}"
            print(f"epoch {info['epoch']:>3}/{info['epochs']}  train loss {info['train_loss']:.4f}"
                  f" acc {info['train_acc']:.4f}  {val}  {info['images_per_s']:.0f} img/s  "
                  f"{info['seconds']:.1f}s  eta {eta:.0f}s{mark}", file=self.stream, flush=True)
        return None
