"""The recipe: the training settings a folder of your own images gets for every key left unset,
chosen from what a scan of its files shows (how many images, per class, how large, colour or
grey) and from the machine. Fashion-MNIST keeps the plain defaults, which are its own recipe.

Two recipes, as the measurements in docs/benchmarks.md taught us:
- transfer: ImageNet-pretrained EfficientNet-Lite0 (its weights install with imclass, so this
  works offline), the new head trained alone first, then everything at a lower rate with
  BatchNorm statistics kept as pretrained (batches of 32 are too small to re-estimate them).
  For photos, and for any dataset small enough that features learnt from ImageNet beat
  features learnt from it (up to TRANSFER_MAX_IMAGES training images).
- scratch: our CNN, for larger sets of small images, at their own size.
A small single-label set (up to EVERY_IMAGE_MAX images) trains on every image, with no
validation split drawn from it. Epochs are counted from optimisation steps, not passes: a
small set gets more passes, a large one fewer, and a CPU run stays within a few minutes. Both validate, keep and test a moving
average of the weights: with a few dozen validation images the best epoch is a noisy pick, and
the average makes the late epochs alike (the worst of three seeds rose on each set of 300 to
3,000 images measured; on 12,000 nothing changed).

And one asked for by name, `--recipe long`: an hour on a CPU for a better model of small
images (Fashion-MNIST, or a folder, at the scratch recipe's size): ResNet-9 at half width
(rescnn), 2.16M images' worth of training at 28 px (up to 200 passes over a folder), random
erasing, no early stopping (a folder's keeps the scratch recipe's weight average; on
Fashion-MNIST's 40 epochs the average was worth nothing, so the built-in set gets none).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from imclass.config import OWN_MODELS, ModelConfig, RunConfig, override, resolve, user_set
from imclass.contract import flip_dims
from imclass.data.decode import choose_channels, median_short_edge
from imclass.errors import ConfigError
from imclass.models.weights import resolve_architecture, run_architecture
from imclass.models.zoo import input_spec

# Training images; above this our CNN from scratch is about as good and much faster (2,400
# Fashion-MNIST images: 87.7% in 43 s from scratch, 88.8% in 209 s pretrained at 96 px).
TRANSFER_MAX_IMAGES = 1200
PHOTO_MIN_EDGE = 128  # px: images at least this large (median shortest edge) are photos
TRANSFER_MODEL = "efficientnet_lite0"
LINE_ART_SIZE = 96  # px: small images are upsampled this far for the pretrained network
SCRATCH_MAX_SIZE = 64  # px: our CNN's cost grows with the square of the side
# Optimisation steps a run aims at, and on a CPU the most training images it may push through
# (passes x images): two to three minutes at the throughput measured on 2 cores.
TRANSFER_STEPS, SCRATCH_STEPS = 500, 2500
# Budgets at the input sides below; a photo set too large for its budget at 224 px gets a
# smaller input (the cost grows with the square of the side) before it gets fewer epochs.
CPU_IMAGE_BUDGET = {"transfer-96": 16_000, "transfer-photo": 6_000, "scratch": 300_000}
PHOTO_SIDES = (224, 192, 160, 128)
# No smaller photo side while this one affords MIN_EPOCHS passes: at 128 px the photo-like set
# scored about 5 points under 160 for the same seeds (2 minutes, 2026-12-06), more passes
# notwithstanding, so a budget whose passes at 160 fall short of its aim keeps 160 anyway.
PHOTO_FLOOR_SIDE = 160
SMALL_SET = 8000  # training images: below, the scratch recipe's batch is 64 (above, 128)
MIN_EPOCHS, MAX_EPOCHS = 6, 30
# What the transfer recipe fine-tunes after its frozen stage: EfficientNet-Lite0's top 4 of its
# 8 layer groups, so the stem and the first three blocks (55,500 of 3.4M weights, the layers
# at the three highest resolutions) stay as pretrained and the backward pass ends above them.
# With the groups' rates falling 0.7x a group they barely moved anyway (block 2 trained at 17%
# of the top rate, the stem at 6%). The top 5 groups first (2026-12-06): a fine-tuning step at
# 224 px 1,008 -> 750 ms; the photo-like set 172 -> 142 s at 94.67/94.33% (median), the
# 30-per-class folder 55 -> 48 s at 81.1/81.5%. Then the top 4 (2026-12-07, three seeds each
# side by side): the photo-like set 99 -> 85 s at 94.67/94.67% (mean 94.33 -> 94.44%), the
# folder 40 -> 38 s at 82.80/82.95% (docs/benchmarks.md, "Fine-tuning above the first blocks"
# and "Issue 29, a fourth sitting"). The top 3 had lost 1.7 points on the photos (2026-12-04).
# Only for that network: another one's groups are cut differently.
TRANSFER_UNFREEZE = "last-4"
# Photos at 224 px train on random crops of 192 px (--train-size) and are validated and tested
# at 224: a step costs (192/224)^2 = 0.73 as much. torchvision's ImageNet recipes train at 176
# and test at 224 for the same reason, and the random crops enlarge what they keep, so the
# objects a test image shows are about as large as in training. On the photo-like set, five
# seeds side by side: 142 -> 109 s, 94.27 -> 94.13% mean test accuracy (94.33 -> 93.67%
# median; seed by seed -1, +4, -4, -6, +5 of 300 photos); 160 px crops lost 4.5 points
# (docs/benchmarks.md, "Fine-tuning above the first blocks"). Not for a --budget run, whose
# sides and passes were calibrated without it.
PHOTO_INPUT_SIDE, PHOTO_TRAIN_SIDE = 224, 192
# A photo set that the CPU budget trains at 160 or 128 px trains on crops of that side and is
# validated and tested one side up (FixRes, Touvron et al. 2019: random resized crops show the
# objects larger than a whole image at the same side does; a larger test side matches them).
# Three seeds each, the same training (docs/benchmarks.md, "Larger photo sets"): 2,400 photos
# at 128 px, tested at 128 97.11% mean, at 160 98.11% (every seed gained; at 192, one seed,
# 97.83%); 1,600 at 160 px, tested at 192, 97.56 -> 98.17%. The larger validation and test
# passes cost 1-8% more time. At 192 px (1,200 photos) a 224 px test side lost 0.7 points
# (with or without the 224 recipe's early crops): 192 stays as it is.
PHOTO_TEST_SIDE = {160: 192, 128: 160}  # the training side -> the validation and test side
# Progressive resizing (fastai's, EfficientNetV2's): those photos' frozen epochs and the first
# fifth of fine-tuning train on crops of PHOTO_EARLY_SIDE px (--early-size, --early-epochs),
# each epoch about half the time of one at 192 px, while the new head and the top layers find
# their way; the later epochs at 192 px bring the model back to the objects' test-time size.
# The photo-like set, five seeds side by side (AVX2 EPYC, 2026-12-07; docs/benchmarks.md,
# "Progressive resizing"): the first 8 of 20 epochs 32 -> 17 s, whole runs 138 -> 120 s
# (median), 94.33 -> 94.47% mean test accuracy (seed by seed -2, +2, 0, +1, +1 photos of 300).
# Up to the 12th epoch at 128 px lost a point on every seed of three.
PHOTO_EARLY_SIDE, EARLY_SHARE = 128, 0.2
# The transfer recipe does not average the mirror image in at test time (--tta; a --budget plan
# does): on its models it was worth +0.2 points on the photo-like set (five seeds), nothing on the
# 30-per-class folder, for a second test pass and twice the cost of every prediction; fewer
# epochs (20 of 25 for photos, 24 of 30 for the folder) lost 1.5-2 points (docs/benchmarks.md,
# "The mirror image at test time, fewer epochs, a smaller side", 2026-12-07).
# A small set trains on every image: the transfer recipe takes no validation split out of a
# single-label set of at most EVERY_IMAGE_MAX images (without a val/ folder), and keeps the
# last epoch's averaged weights. With 30 images a class a quarter more training images are
# worth more than choosing the epoch on 60 validation images (each 1.7 points of validation
# accuracy). Three seeds each on an AVX2 EPYC (docs/benchmarks.md, "Training on every
# image"): the 30-per-class folder, 81.3% (median) with validation, 82.95% with 20 epochs on
# every image (84-88 s), 83.45% with 15 (67-71 s), 82.65% with 12 (59-61 s): small images
# get EVERY_IMAGE_EPOCHS; the photo-like set 94.33 -> 94.67% with the 20 passes its image
# budget gives (16 passes: 92.67, 94.0, 94.0%). At the limit, 500 Fashion-MNIST images (50 a
# class): 83.05 -> 83.6% (median, every seed gained) in 94 s instead of 118; 500 photos:
# 92.78 -> 94.0% (mean, every seed gained) in 114 s instead of 143. Binary and
# multilabel sets keep validation to tune their thresholds on, and a user who asks for
# anything that watches validation (KEEP_VALIDATION) keeps it too (binary, 60 Fashion-MNIST
# coats and pullovers, three seeds: 84.57% mean with validation, 84.70% on every image with 30
# epochs, 83.75% with 15). The cap is in steps, EVERY_IMAGE_STEPS (15 epochs of 300 images,
# 10 batches each), at least EVERY_IMAGE_EPOCHS: a smaller set takes more passes, so 90 images
# of three hard classes train 30 epochs, not 15 (five seeds: 74.31 -> 76.61% mean, 31 -> 41 s).
EVERY_IMAGE_MAX, EVERY_IMAGE_EPOCHS, EVERY_IMAGE_STEPS = 500, 15, 150
KEEP_VALIDATION = frozenset({"val_fraction", "patience", "select_metric", "overfit_epochs"})
# The transfer recipe's frozen stage runs every epoch through the backbone. Training the head
# on the backbone's features cached for 4 augmented views (--feature-views 4, 15 head epochs)
# did not pay on the photo-like set: 93.3% (median of 3 seeds) against 94.7%, in 265 s against
# 280 s; with only the top 3 layer groups fine-tuned after it, 93.0% in 182 s
# (docs/benchmarks.md "Your photos in a minute", 2026-12-04).
# The folder recipes' moving average of the weights (--ema). Its warm-up, decay (1 + n) /
# (10 + n) after n steps, rules a run of a few hundred steps: the average spans about the
# last tenth of it. On three sets of 300 to 3,000 images, three seeds each, it raised the
# worst seed by 0.15 to 2 points, the medians within 0.3 (docs/benchmarks.md).
FOLDER_EMA = 0.999
# The long recipe's network (70.4 MFLOPs per 28x28 image, 1.6M parameters) and schedule: 40
# epochs of Fashion-MNIST's 54,000 training images are 2.16M images, ~50 minutes on 2 cores
# (docs/benchmarks.md). A folder gets as many images' worth of steps, scaled down with the
# square of its side (the cost per image grows with it), within LONG_MAX_EPOCHS passes.
LONG = {"name": "rescnn", "widths": (32, 64, 128, 256), "depths": (0, 1, 0, 1),
        "erase_p": 0.5, "val_fraction": 0.1, "patience": None}
LONG_EPOCHS, LONG_IMAGES_AT_28, LONG_MAX_EPOCHS = 40, 2_160_000, 200

# Training images a run can afford at an input side (px): the CPU budgets above, or under
# --budget what imclass.budget measured this machine to train in the time there is.
Afford = Callable[[int], float]


@dataclass(frozen=True)
class DataFacts:
    """What the recipe is chosen from: a folder dataset's scan, before any decoding."""
    train_images: int  # images the model trains on (after the validation split)
    classes: int
    smallest_class: int  # training images of the rarest class (or label)
    channels: int
    short_edge: int  # median shortest edge of the training images, px
    task: str = "multiclass"  # as imclass.data.labels.infer_task reads the labels
    held_out: int = 0  # validation images the split draws from the training images (no val/)

    @property
    def photos(self) -> bool:
        """Colour or greyscale (X-rays, scans): large enough to be seen at 224 px."""
        return self.short_edge >= PHOTO_MIN_EDGE

    def describe(self) -> str:
        grey = "greyscale " if self.channels == 1 else ""
        kind = f"{grey}photos" if self.photos else ("greyscale images" if grey
                                                    else "small colour images")
        return (f"{self.train_images} training images of {kind} ({self.classes} classes, "
                f"{self.smallest_class} in the smallest, {self.short_edge} px)")


def facts_of(scanned, val_fraction: float, subset: int | None = None) -> DataFacts:
    """DataFacts of a `data.scan` result (imclass.data.own.FolderDataset), counting only the
    `subset` of training images a run takes (--subset), as data.prepare will."""
    entries = scanned.listings["train"].entries
    infos = scanned.infos["train"]
    readable = [(e, i) for e, i in zip(entries, infos) if "error" not in i]
    counts: dict[str, int] = {}
    for entry, _ in readable:
        for label in entry.labels:
            counts[label] = counts.get(label, 0) + 1
    taken = subset / len(readable) if subset and subset < len(readable) else 1.0
    drawn = 0.0 if "val" in scanned.listings else val_fraction  # a stratified split
    images = len(readable) * taken
    return DataFacts(train_images=round(images * (1 - drawn)), classes=len(counts),
                     smallest_class=round(min(counts.values(), default=0) * taken * (1 - drawn)),
                     channels=choose_channels(infos), short_edge=median_short_edge(infos) or 0,
                     task=scanned.task, held_out=round(images * drawn))


def small_builtin(cfg: RunConfig) -> DataFacts | None:
    """A subset of Fashion-MNIST small enough for the scratch recipe's batch of 64 (under
    SMALL_SET training images), as a folder of the same images would be: counted in steps,
    not passes. The built-in defaults' batches of 256 give 2,400 training images 10 steps an
    epoch (`--subset 3000 --epochs 2`: 62.7% test accuracy, 2026-12-05). Never transfer
    learning: our CNN at 28 px is the fast choice for these images."""
    subset = cfg.data.subset
    if not subset or subset * (1 - cfg.data.val_fraction) >= SMALL_SET:
        return None
    train = round(subset * (1 - cfg.data.val_fraction))
    return DataFacts(train_images=train, classes=10, smallest_class=train // 10, channels=1,
                     short_edge=28)


@dataclass(frozen=True)
class Recipe:
    name: str  # transfer, scratch, long, none (the plain defaults) or run (imclass prune)
    values: dict[str, Any]  # the settings it gives (after `apply`: those it gave)
    reason: str

    def line(self, cfg: RunConfig) -> str:
        """One console line saying what was chosen (from the resolved config) and why."""
        if self.name == "none":
            return f"recipe: the plain defaults ({self.reason})"
        t, d = cfg.train, cfg.data
        weights = " pretrained" if cfg.model.pretrained else " from scratch"
        if self.name == "run":
            weights = " from its weights"
        stages = _stages(t)
        size = f"{d.image_size if d.image_size else 'native'} px"
        if d.train_size:
            early = (f", the first {t.early_epochs} epochs on {d.early_size} px"
                     if d.early_size and t.early_epochs else "")
            size += f" (training on {d.train_size} px crops{early})"
        lr = f"{t.lr:g}" if isinstance(t.lr, float) else f"lr {t.lr}"  # "auto": found later
        average = f", weight average {t.ema:g}" if t.ema else ""
        # settled from the training split's counts after this line is first printed
        # (run_setup.balance_for, which says it); run.json's line includes it
        balance = f", balance {t.balance}" if t.balance not in ("auto", "none") else ""
        flips = ", test-time flips" if t.tta else ""
        flips += f", test-time moves of {t.tta_shift} px" if t.tta_shift else ""
        return (f"recipe for {self.reason}: {cfg.model.name}{weights} at {size}, batch "
                f"{t.batch_size}, {stages}, {t.optimizer} {lr}, augment "
                f"{cfg.augment.preset}{average}{balance}{flips}; flags override")


def _stages(t) -> str:
    """The epochs of each stage, as the recipe line says them."""
    def epochs(n: int) -> str:
        return f"{n} epoch{'s' * (n != 1)}"
    if not t.freeze_epochs:
        return epochs(t.epochs)
    head = (f"head on cached features ({t.feature_views} views) for {epochs(t.freeze_epochs)}"
            if t.feature_views else f"{t.freeze_epochs} frozen")
    top = "" if t.unfreeze == "all" else f" of the top {t.unfreeze.split('-')[1]} layer groups"
    return f"{head} + {epochs(t.epochs - t.freeze_epochs)}{top}"


def choose(cfg: RunConfig, facts: DataFacts | None, device_type: str) -> Recipe:
    """The recipe for this data and machine (facts None: a built-in dataset)."""
    if cfg.train.recipe == "none":
        if run_architecture(Path(cfg.model.weights or "")):  # imclass prune: a trained run
            return Recipe("run", {}, f"fine-tuning the run {cfg.model.weights}")
        return Recipe("none", {}, "--recipe none")
    if cfg.train.recipe == "long":
        return Recipe("long", long_values(facts, device_type), "an hour on a CPU (--recipe long)"
                      if facts is None else facts.describe() + ", for an hour (--recipe long)")
    if facts is None:
        small = small_builtin(cfg)
        if small is not None:  # a quick try on a subset: the folder recipe's care
            return Recipe("scratch", scratch_values(small, device_type),
                          f"{small.describe()} (--subset {cfg.data.subset})")
        return Recipe("none", {}, f"{cfg.data.source} has its own tuned defaults")
    given = user_set(cfg)
    transfer, note = _wants_transfer(cfg, facts, given)
    if not transfer:
        return Recipe("scratch", scratch_values(facts, device_type), facts.describe() + note)
    if _on_every_image(cfg, facts, given):
        whole = every_image(facts)
        return Recipe("transfer", every_image_values(whole, device_type),
                      f"{whole.describe()}, all trained on (no validation split in a set "
                      f"of up to {EVERY_IMAGE_MAX}; --val-fraction sets one)")
    return Recipe("transfer", transfer_values(facts, device_type), facts.describe())


def apply(cfg: RunConfig, recipe: Recipe) -> tuple[RunConfig, Recipe]:
    """The config with the recipe's values for every key the user did not set, and the
    recipe narrowed to the values it gave. The user's keys stay marked as theirs."""
    given = user_set(cfg)
    chosen = {k: v for k, v in recipe.values.items() if k not in given}
    if "name" in given and cfg.model.name != TRANSFER_MODEL:
        chosen.pop("unfreeze", None)  # counted in Lite0's layer groups
    if given & {"image_size", "preset", "crop_scale"}:
        for key in ("train_size", "early_size", "early_epochs"):  # for the photo preset at 224
            chosen.pop(key, None)
    if "train_size" in given:  # the user's side: no early epochs unless asked for
        chosen.pop("early_size", None)
        chosen.pop("early_epochs", None)
    if "epochs" in given and "freeze_epochs" not in given and chosen.get("freeze_epochs"):
        chosen["freeze_epochs"] = _frozen_epochs(cfg.train.epochs)
    if "early_epochs" in chosen and given & {"epochs", "freeze_epochs"}:
        final = override(cfg, chosen).train
        chosen["early_epochs"] = early_epochs(final.epochs, final.freeze_epochs)
    if chosen.get("tta") and not _flips_in_training(override(cfg, chosen)):
        chosen.pop("tta")  # a --budget plan's, but the user's --hflip-p 0 left nothing to flip
    applied = dataclasses.replace(recipe, values=chosen)
    if not chosen:
        return cfg, applied
    return dataclasses.replace(override(cfg, chosen), explicit=cfg.explicit), applied


def _flips_in_training(cfg: RunConfig) -> bool:
    augment = resolve(cfg).augment
    return bool(flip_dims(augment.hflip_p, augment.vflip_p))


def _wants_transfer(cfg: RunConfig, facts: DataFacts, given: frozenset) -> tuple[bool, str]:
    """Transfer learning for photos and small sets, when weights can be had (else a note)."""
    if "name" in given:
        return cfg.model.name not in OWN_MODELS and cfg.model.pretrained, ""
    if "pretrained" in given and not cfg.model.pretrained:
        return False, ""  # "no pretrained weights", said outright: our CNN from scratch
    if not (facts.photos or facts.train_images <= TRANSFER_MAX_IMAGES
            or (cfg.model.pretrained and "pretrained" in given)):
        return False, ""
    try:
        resolve_architecture(ModelConfig(name=TRANSFER_MODEL, pretrained=True))
    except ConfigError as exc:
        return False, f"; no pretrained weights, so from scratch ({exc})"
    return True, ""


def _on_every_image(cfg: RunConfig, facts: DataFacts, given: frozenset) -> bool:
    """A small single-label set whose validation images would come out of its training
    images (EVERY_IMAGE_MAX), where the user asked for nothing that watches validation and
    no --budget plan (calibrated with a validation split) decides."""
    return (facts.task == "multiclass" and 0 < facts.held_out
            and facts.train_images + facts.held_out <= EVERY_IMAGE_MAX
            and not cfg.train.budget and not given & KEEP_VALIDATION)


def every_image(facts: DataFacts) -> DataFacts:
    """The facts of a run that trains on the images validation would have held out too."""
    whole = facts.train_images + facts.held_out
    return dataclasses.replace(facts, train_images=whole, held_out=0, smallest_class=round(
        facts.smallest_class * whole / max(1, facts.train_images)))


def every_image_values(whole: DataFacts, device_type: str) -> dict[str, Any]:
    """The transfer recipe without validation, so nothing stops the run early and the last
    epoch's averaged weights are kept: photos as many passes as their image budget gives,
    small images at most EVERY_IMAGE_STEPS steps (EVERY_IMAGE_EPOCHS when that is more)."""
    values = transfer_values(whole, device_type)
    steps_per_epoch = math.ceil(whole.train_images / values["batch_size"])
    cap = max(EVERY_IMAGE_EPOCHS, math.ceil(EVERY_IMAGE_STEPS / max(1, steps_per_epoch)))
    epochs = values["epochs"] if whole.photos else min(values["epochs"], cap)
    values |= {"epochs": epochs, "freeze_epochs": _frozen_epochs(epochs), "val_fraction": 0.0,
               "patience": None}
    if "early_epochs" in values:
        values["early_epochs"] = early_epochs(epochs, values["freeze_epochs"])
    return values


def _epochs(train_images: int, batch: int, steps: int, budget: int | None) -> int:
    """Enough passes for `steps` optimisation steps, within the image budget on a CPU."""
    steps_per_epoch = max(1, math.ceil(train_images / batch))
    epochs = round(steps / steps_per_epoch)
    if budget is not None:
        epochs = min(epochs, budget // max(1, train_images))
    return max(MIN_EPOCHS, min(MAX_EPOCHS, epochs))


def _frozen_epochs(epochs: int) -> int:
    """A quarter of the run for the new head alone (at least one epoch, never all)."""
    return min(epochs - 1, max(1, epochs // 4))


def transfer_values(facts: DataFacts, device_type: str, afford: Afford | None = None,
                    headroom: float = 1.0, min_passes: int = MIN_EPOCHS,
                    smaller_crops: bool = True) -> dict[str, Any]:
    """Pretrained EfficientNet-Lite0: the largest photo side whose affordable images give
    `min_passes` passes, the epochs from TRANSFER_STEPS within `headroom` times what it
    affords (above 1 for a budget run, whose clock ends training). Unless `smaller_crops` is
    False, photos at 224 px train on smaller crops (PHOTO_TRAIN_SIDE), and those at 160 or
    128 px on crops of that side, validated and tested one side up (PHOTO_TEST_SIDE)."""
    if afford is None and device_type == "cpu":
        afford = _cpu_transfer_budget
    budget = None
    if facts.photos:
        spec = input_spec("tf_efficientnet_lite0")
        side = spec.size
        if afford is not None:
            sides = [s for s in PHOTO_SIDES if s >= PHOTO_FLOOR_SIDE] if afford(
                PHOTO_FLOOR_SIDE) >= MIN_EPOCHS * facts.train_images else PHOTO_SIDES
            side = next((s for s in sides if afford(s) >= min_passes * facts.train_images),
                        sides[-1])
            budget = round(afford(side) * headroom)
        # timm's evaluation transform: shorter edge to size / crop_pct, centre crop; the
        # margin gives training its random crops
        data = {"image_size": side, "crop_pct": spec.crop_pct, "fit": "crop",
                "preset": "photo"}
        if smaller_crops and side == PHOTO_INPUT_SIDE:
            data |= {"train_size": PHOTO_TRAIN_SIDE, "early_size": PHOTO_EARLY_SIDE}
        elif smaller_crops and side in PHOTO_TEST_SIDE:  # tested one side up
            data |= {"image_size": PHOTO_TEST_SIDE[side], "train_size": side}
    else:
        budget = None if afford is None else round(afford(LINE_ART_SIZE) * headroom)
        data = {"image_size": LINE_ART_SIZE, "fit": "squash", "preset": "fashion"}
    batch = 32
    epochs = _epochs(facts.train_images, batch, TRANSFER_STEPS, budget)
    if "early_size" in data:
        data["early_epochs"] = early_epochs(epochs, _frozen_epochs(epochs))
    # evaluation in batches of the same order as training's: a 1024-image batch at 224 px
    # would hold gigabytes of activations at once for no gain in speed
    return {**data, "name": TRANSFER_MODEL, "pretrained": True, "batch_size": batch,
            "eval_batch_size": 4 * batch,
            "epochs": epochs, "freeze_epochs": _frozen_epochs(epochs), "optimizer": "adamw",
            "lr": 3e-3, "fine_tune_lr": 1e-3, "lr_mult": 0.7, "weight_decay": 0.01,
            "freeze_bn": True, "unfreeze": TRANSFER_UNFREEZE,
            "patience": transfer_patience(epochs), "ema": FOLDER_EMA}


def early_epochs(epochs: int, frozen: int) -> int:
    """The epochs on --early-size crops: the frozen stage and the first EARLY_SHARE of the
    fine-tuning after it."""
    return frozen + round(EARLY_SHARE * (epochs - frozen))


def transfer_patience(epochs: int) -> int:
    """Epochs without a better validation loss before the transfer recipe stops: a quarter of
    the run (6 of 25, 7 of 30). A third (8 and 10) never changed the kept epoch where a quarter
    stops sooner: replayed on 18 runs' histories of 2026-12-06 (the schedule is planned for
    every epoch, so a run is the same up to its stop), a quarter kept each run's epoch and
    saved 0-10 s; a fifth changed it once (docs/benchmarks.md)."""
    return max(4, epochs // 4)


def _cpu_transfer_budget(side: int) -> float:
    if side == LINE_ART_SIZE:
        return CPU_IMAGE_BUDGET["transfer-96"]
    return CPU_IMAGE_BUDGET["transfer-photo"] * (224 / side) ** 2


def scratch_side(facts: DataFacts) -> int:
    return min(SCRATCH_MAX_SIZE, max(8, facts.short_edge))


def scratch_values(facts: DataFacts, device_type: str,
                   afford: Afford | None = None) -> dict[str, Any]:
    """Our CNN at the images' own size (at most SCRATCH_MAX_SIZE), SCRATCH_STEPS steps within
    what the run affords."""
    batch = 64 if facts.train_images < SMALL_SET else 128
    side = scratch_side(facts)
    if afford is None and device_type == "cpu":
        afford = lambda _side: CPU_IMAGE_BUDGET["scratch"]  # noqa: E731
    epochs = _epochs(facts.train_images, batch, SCRATCH_STEPS,
                     None if afford is None else round(afford(side)))
    return {"image_size": side, "name": "cnn",
            "batch_size": batch, "epochs": epochs, "lr": 0.2 * batch / 256,
            "preset": "fashion" if facts.channels == 1 else "light",
            "patience": max(5, epochs // 4), "ema": FOLDER_EMA}


def long_values(facts: DataFacts | None, device_type: str,
                afford: Afford | None = None) -> dict[str, Any]:
    """The long recipe: for a built-in dataset the same schedule on any device; for a folder,
    the scratch recipe's size, batch and augmentation, with LONG_IMAGES_AT_28 of training
    (or what `afford` says the run can afford)."""
    if facts is None:
        return {**LONG, "epochs": LONG_EPOCHS}
    scratch = scratch_values(facts, device_type)
    side = scratch["image_size"]
    images = LONG_IMAGES_AT_28 * (28 / side) ** 2 if afford is None else afford(side)
    epochs = max(MIN_EPOCHS, min(LONG_MAX_EPOCHS, round(images / max(1, facts.train_images))))
    return {**scratch, **LONG, "epochs": epochs}
