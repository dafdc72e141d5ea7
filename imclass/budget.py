"""`--budget 5m`: the best model a time budget buys on the machine that runs it.

A short probe times a few training steps of each candidate model on this machine, at the
run's own input size and batch (fresh: a measurement remembered from a busy moment would
mislead the plan), and turns the time left into training images each can afford. Then:
- Fashion-MNIST and folders of small images: our `cnn`, or the long recipe's residual CNN
  (`rescnn`, random erasing) once it can afford RESCNN_MIN_EPOCHS passes (and at least the
  passes the cnn's recipe gives a folder): below that the small net, trained to the end of its
  schedule, beats the large one cut short.
- Photos and small sets: the pretrained transfer recipe, at the largest photo side whose
  affordable images give it PHOTO_MIN_PASSES passes (recipe.transfer_values).
The epochs are then an upper bound: the last stage's learning-rate schedule follows the clock
(imclass.timekeeping), so training anneals and ends by its deadline, leaving the time the test
evaluation and the report need (`reserve_seconds`). Keys the user set still win: `--budget 5m
--model rescnn` keeps the rescnn and fits its epochs to the time.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any

import torch

from imclass.config import RunConfig, format_duration, resolve, user_set
from imclass.devices import mixed_precision, native_bf16
from imclass.finetune import FROZEN_EPOCH_COST, apply_stage, plan_stages, train_mode
from imclass.models import build_model, count_parameters
from imclass.models.folding import fold_norms
from imclass.models.weights import resolve_architecture
from imclass.precision import faster, measure, probe_batch, step_seconds
from imclass.recipe import (LONG, LONG_MAX_EPOCHS, DataFacts, Recipe, apply, long_values,
                            small_builtin, transfer_values)
from imclass.timekeeping import Budget

# Fashion-MNIST's own sizes: 60,000 training images and the 10,000 test images. A budget
# trains on all 60,000: its schedule follows the clock and anneals to the end, and the last
# epoch is kept, so a validation split would only draw curves. Five minutes on a Xeon with
# AMX (2026-12-06, seeds 0-2 side by side): 93.83% median (93.70-93.88) against 93.57%
# (93.49-93.67) holding out 10%, every seed better (docs/benchmarks.md, "A time budget").
FMNIST_TRAIN, FMNIST_TEST, FMNIST_VAL_FRACTION = 60_000, 10_000, 0.0
# And its model averages each image with its mirror image at test time (--tta): on the same
# three five-minute models (2026-12-06) 93.88/93.83/93.70% became 94.03/94.13/94.03%, every
# seed better, for one more forward pass per test image (about a second on 2 cores).
FMNIST_TTA = True
# Passes of the training set (as the probe estimates them) the residual CNN needs before it
# beats the plain cnn trained for the same time; below them the small net wins. Five minutes
# on a Xeon with AMX (2026-12-06, seed 0): the cnn 93.95% in 36 passes, the rescnn 93.66% in
# 11 (the probe had estimated 8.4): docs/benchmarks.md, "A time budget".
RESCNN_MIN_EPOCHS = 20
# A training step in the loop (augmentation, the optimiser, batch gathering, the loss) takes
# longer than the probe's bare forward + backward pass: the loop's images/s are this share of
# the probe's (measured on 2 cores, bf16: cnn 6,800 against 8,500 images/s).
LOOP_SHARE = 0.8
# After training: the test pass, thresholds, figures (t-SNE, Grad-CAM), the traced model and
# the report: AFTER_FIXED_S plus passes over the test and validation images at the fp32
# forward speed (evaluation on a CPU is fp32), plus GRADCAM_IMAGES forward + backward passes.
AFTER_FIXED_S = 4.0
GRADCAM_IMAGES = 16
# The run aims to end this share of the budget early: the clock is read between steps, and
# a process's exit takes a moment.
SLACK = 0.03
# The planned epochs are this many times those the probe says fit: an upper bound, as the
# clock ends training (a probe off by a third either way still uses the whole budget).
EPOCHS_HEADROOM = 1.5
# Passes (as the probe estimates them) a budget's photo side must afford: a smaller side for
# more passes. Two minutes on the photo-like set (2026-12-06, seeds 0-2): 224 px, 10-13
# epochs, 90.67% median; 160 px, 21-22 epochs, 94.33% (every seed better). At 15 estimated
# passes (about 22 run) two minutes there take 160 px, five take 224.
PHOTO_MIN_PASSES = 15
# The transfer plan's model averages the mirror image in too (--tta): on five photo-set runs
# at 160 and 224 px (2026-12-06, same weights) 94.00/92.33/94.33/94.33/96.00% became
# 96.00/94.00/94.33/94.33/95.67% (+0.67 points on average, two better, one worse by one of
# 300 test images), for a second test pass (about 2.6 s of 300 photos at 160 px).
TRANSFER_TTA = True
# Seconds a folder's images take to decode per image (JPEGs at 224 px on 2 cores; cached
# after the first run), counted before the probe knows the data.
DECODE_S_PER_IMAGE = 0.004


@dataclass
class Candidate:
    """A model the budget may choose: the config values it gives and what the probe found."""
    name: str
    values: dict[str, Any]
    min_epochs: float = 0.0  # passes it needs to be worth choosing over the one before it
    images_per_s: float = 0.0  # training, in the loop (LOOP_SHARE of the probe's)
    eval_images_per_s: float = 0.0  # validation and test passes, fp32
    precision: str = "fp32"

    def epoch_seconds(self, train_images: int, val_images: int) -> float:
        """A training pass and its validation pass."""
        return (train_images / self.images_per_s
                + val_images / max(1e-9, self.eval_images_per_s))


@dataclass(frozen=True)
class Sizes:
    """How many images the run trains, validates and tests on (estimated before decoding)."""
    train: int
    val: int
    test: int


def sizes_of(cfg: RunConfig, facts: DataFacts | None, val_fraction: float) -> Sizes:
    if facts is None:
        total = min(cfg.data.subset or FMNIST_TRAIN, FMNIST_TRAIN)
        val = round(total * val_fraction)
        return Sizes(total - val, val, FMNIST_TEST)
    val = round(facts.train_images * val_fraction / max(1e-9, 1 - cfg.data.val_fraction))
    test = round((facts.train_images + val) * cfg.data.test_fraction)
    return Sizes(facts.train_images, val, test)


def reserve_seconds(test_images: int, val_images: int, eval_images_per_s: float,
                    test_passes: int = 1) -> float:
    """Seconds the run needs after training ends (see AFTER_FIXED_S); `test_passes`: the
    views the model averages per test image (imclass.pixel_model.view_count: 2 for its
    mirror image, --tta, which a plan may choose; 10 with a user's --tta-shift as well)."""
    passes = test_passes * test_images + 2 * val_images + 3 * GRADCAM_IMAGES
    return AFTER_FIXED_S + passes / max(1e-9, eval_images_per_s)


# The probe's steps: the first ones of a model are slow (oneDNN picks and caches its kernels:
# the default cnn's first timed step ran at 5,300 images/s, later ones at 8,300-9,100), so
# two untimed steps, then the median of three.
budget_steps = functools.partial(step_seconds, untimed=2, timed=3)


def probe(candidate: Candidate, cfg: RunConfig, channels: int, outputs: int,
          device: torch.device, timer=budget_steps) -> Candidate:
    """Times the candidate's training step on this machine (imclass.precision's probe: the
    run's own shape and batch, random pixels) and fills in its speeds."""
    c = resolve(apply(cfg, Recipe("probe", candidate.values, ""))[0])  # the user's keys win
    architecture, _ = resolve_architecture(dataclasses.replace(c.model, weights=None))
    model = build_model(dataclasses.replace(c.model, pretrained=False), channels, outputs,
                        architecture).to(device, memory_format=torch.channels_last)
    side = c.data.image_size or 28
    trained = c.data.training_side(side)  # --train-size's crops; evaluation sees `side`
    shape, batch = (channels, trained, trained), c.train.batch_size
    label = f"{architecture} ({count_parameters(model)} parameters)"
    # timed as it trains most of its epochs: the last stage's layers (the transfer recipe
    # leaves Lite0's lowest groups frozen), its BatchNorms frozen inside their convolutions
    apply_stage(model, plan_stages(model, c.train)[-1])
    if c.train.freeze_bn:
        fold_norms(model, torch.randn((2, *shape), generator=torch.Generator().manual_seed(0)
                                      ).to(device, memory_format=torch.channels_last))
    if device.type == "cpu":
        wanted = c.train.precision
        if wanted == "auto" and native_bf16():
            m = measure(model, label, shape, batch, outputs, timer)
            wanted = faster(m)[0]
        else:
            wanted = "bf16" if wanted == "bf16" else "fp32"
            n = probe_batch(shape, batch)
            train_mode(model)
            m = {"images": n, "fp32_s": timer(model, shape, outputs, None, n)}
            if wanted == "bf16":
                m["bf16_s"] = timer(model, shape, outputs, torch.bfloat16, n)
        train_s, eval_s = m[f"{wanted}_s"], m["fp32_s"]
    else:  # a GPU trains and evaluates under its mixed precision
        n = probe_batch(shape, batch)
        train_mode(model)
        train_s = eval_s = timer(model, shape, outputs,
                                 mixed_precision(device, c.train.precision), n, device=device)
        m, wanted = {"images": n}, c.train.precision
    # forward alone is about a third of forward + backward, and its cost grows with the
    # pixels of the evaluated side
    eval_images_per_s = 3 * m["images"] / eval_s * (trained / side) ** 2
    return dataclasses.replace(candidate, images_per_s=LOOP_SHARE * m["images"] / train_s,
                               eval_images_per_s=eval_images_per_s, precision=wanted)


def plan(cfg: RunConfig, facts: DataFacts | None, recipe: Recipe, device: torch.device,
         budget: Budget, outputs: int, timer=budget_steps) -> tuple[Recipe, dict]:
    """The recipe that fits `budget`, and what was measured (for run.json and the report)."""
    given = user_set(cfg)
    channels = facts.channels if facts is not None else 1
    if recipe.name == "transfer":
        return _plan_transfer(cfg, facts, recipe, device, budget, outputs, channels, timer)
    candidates = _candidates(cfg, facts, recipe, device.type, given)
    val_fraction = candidates[0].values.get("val_fraction", cfg.data.val_fraction)
    sizes = sizes_of(cfg, facts, val_fraction)
    measured = [probe(c, cfg, channels, outputs, device, timer) for c in candidates]
    train_s = _training_seconds(budget, sizes, measured[0], facts)
    chosen = measured[0]
    for c in measured[1:]:
        if train_s / c.epoch_seconds(sizes.train, sizes.val) >= c.min_epochs:
            chosen = c
    afford = train_s / chosen.epoch_seconds(sizes.train, sizes.val)
    epochs = max(1, math.ceil(afford * EPOCHS_HEADROOM))
    if recipe.name == "scratch":  # small data: no more passes than the recipe would give
        epochs = min(epochs, chosen.values["epochs"] if chosen.name == "cnn"
                     else LONG_MAX_EPOCHS)
    values = {**chosen.values, "epochs": epochs}
    why = (f"about {afford:.1f} passes of {sizes.train:,} images fit in "
           f"{format_duration(train_s)} of training at {chosen.images_per_s:,.0f} images/s "
           f"({chosen.precision})")
    others = [f"{c.name} {c.images_per_s:,.0f} images/s" for c in measured if c is not chosen]
    if others:
        why += f"; measured too: {', '.join(others)}"
    return _recipe(recipe, values, chosen.name, cfg, budget, why), _facts(
        budget, train_s, measured, chosen, afford, sizes)


def _candidates(cfg: RunConfig, facts: DataFacts | None, recipe: Recipe, device_type: str,
                given: frozenset) -> list[Candidate]:
    """The plain cnn and the long recipe's rescnn (one of them if the user named a model or
    --recipe long)."""
    if recipe.name == "long":
        return [Candidate("rescnn", dict(recipe.values))]
    if recipe.name == "scratch":  # a folder, or a small subset of Fashion-MNIST
        small = dict(recipe.values)
        large = long_values(facts or small_builtin(cfg), device_type)
        scratch_epochs = small["epochs"]
    else:  # every image, unless the user's patience needs a validation split to watch
        val = FMNIST_VAL_FRACTION if "patience" not in given else LONG["val_fraction"]
        small = {"val_fraction": val, "patience": None, "tta": FMNIST_TTA}
        large = {**long_values(None, device_type), "val_fraction": val, "tta": FMNIST_TTA}
        scratch_epochs = 10  # the default's
    candidates = [Candidate("cnn", small),
                  Candidate("rescnn", large, max(RESCNN_MIN_EPOCHS, scratch_epochs))]
    if "name" in given:
        keep = [c for c in candidates if c.values.get("name", "cnn") == cfg.model.name]
        return keep[:1] or [Candidate(cfg.model.name, small)]
    return candidates


def _training_seconds(budget: Budget, sizes: Sizes, c: Candidate,
                      facts: DataFacts | None) -> float:
    """Seconds left for training: the budget less what has passed, the decoding still to
    come, the time after training and the slack."""
    decode = 1.0 if facts is None else DECODE_S_PER_IMAGE * (sizes.train + sizes.val
                                                             + sizes.test)
    after = reserve_seconds(sizes.test, sizes.val, c.eval_images_per_s,
                            2 if c.values.get("tta") else 1)
    return max(1.0, budget.left() - SLACK * budget.seconds - decode - after)


def _plan_transfer(cfg, facts, recipe, device, budget, outputs, channels, timer):
    """The transfer recipe with its photo side and epochs from this machine's measured speed.
    Lite0's cost per image grows with the square of its side, so one probe at the recipe's
    side (at most 224 px) prices them all."""
    flips = {"tta": True} if TRANSFER_TTA else {}
    plain = {k: v for k, v in recipe.values.items()  # see transfer_values
             if k not in ("train_size", "early_size", "early_epochs")}
    c = probe(Candidate("efficientnet_lite0", {**plain, **flips}), cfg, channels,
              outputs, device, timer)
    side0 = c.values.get("image_size", 224)
    sizes = sizes_of(cfg, facts, cfg.data.val_fraction)
    train_s = _training_seconds(budget, sizes, c, facts)
    epoch_share = 0.25 * FROZEN_EPOCH_COST + 0.75  # a quarter of the epochs are frozen

    def afford(side: int) -> float:
        scale = (side / side0) ** 2
        per_image = scale * (1 / c.images_per_s + sizes.val / sizes.train / c.eval_images_per_s)
        return train_s / (per_image * epoch_share)

    values = {**transfer_values(facts, device.type, afford, EPOCHS_HEADROOM, PHOTO_MIN_PASSES,
                                smaller_crops=False), **flips}
    side = values.get("image_size", side0)
    passes = afford(side) / max(1, sizes.train)
    why = (f"about {passes:.1f} passes of {sizes.train:,} images at {side} px fit in "
           f"{format_duration(train_s)} of training ({c.images_per_s * (side0 / side) ** 2:,.0f}"
           f" images/s, {c.precision})")
    return _recipe(recipe, values, "efficientnet_lite0", cfg, budget, why), _facts(
        budget, train_s, [c], c, passes, sizes)


def _recipe(recipe: Recipe, values: dict, model: str, cfg: RunConfig, budget: Budget,
            why: str) -> Recipe:
    name = recipe.name if recipe.name != "none" else "budget"
    what = recipe.reason if recipe.name not in ("none",) else cfg.data.source
    return Recipe(name, values, f"{what}, in {format_duration(budget.seconds)} (--budget: "
                  f"{model}; {why})")


def _facts(budget: Budget, train_s: float, measured: list[Candidate], chosen: Candidate,
           passes: float, sizes: Sizes) -> dict:
    return {"seconds": budget.seconds, "planned_at_s": round(budget.elapsed(), 2),
            "training_seconds_planned": round(train_s, 1), "chosen": chosen.name,
            "passes_planned": round(passes, 2),
            "images": dataclasses.asdict(sizes),
            "measured": {c.name: {"train_images_per_s": round(c.images_per_s),
                                  "eval_images_per_s": round(c.eval_images_per_s),
                                  "precision": c.precision} for c in measured}}


def describe_end(info: dict) -> str:
    """The console's closing line on the budget: planned against what happened."""
    return (f"budget {format_duration(info['seconds'])}: training ended at "
            f"{info['training_ended_at_s']:.0f}s ({info['ended_by']}), the run at "
            f"{info['total_seconds']:.0f}s")
