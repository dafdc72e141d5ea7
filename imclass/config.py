"""The typed run configuration: every default, its documentation and its allowed range in one place.

A run is described by one frozen `RunConfig` made of sections (`data`, `augment`, `model`,
`train`). A YAML file and command-line flags only override the defaults. Every field name is
unique across sections, so a flat key (`lr`), a dotted key (`train.lr`) and a flag (`--lr`) all
name the same thing. Unknown keys are refused with the nearest valid name; values are checked
against their range once, here, at the boundary.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imclass.errors import ConfigError


def option(default: Any, help: str, *, choices: tuple | None = None, low: float | None = None,
           high: float | None = None, open_low: bool = False, open_high: bool = False,
           flag: str | None = None) -> Any:
    """A config field with its help text and its allowed values (a range or a set of choices)."""
    meta = dict(help=help, choices=choices, low=low, high=high, open_low=open_low,
                open_high=open_high, flag=flag)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DataConfig:
    source: str = option("fashion-mnist", "dataset: a built-in name (fashion-mnist) or a folder "
                         "of your images (CSV + images/, or one folder per class)", flag="data")
    data_dir: str | None = option(None, "folder holding the built-in dataset's files (searched "
                                  "first)")
    task: str = option("auto", "kind of classification; auto reads it from the labels",
                       choices=("auto", "multiclass", "binary", "multilabel", "hierarchical"))
    image_column: str | None = option(None, "CSV column of image file names (default: the first "
                                      "of image, filename, file, path, ...)")
    label_column: str | None = option(None, "CSV column of labels (default: the first of label, "
                                      "labels, class, tags, ...)")
    label_sep: str = option(";|", "characters that separate several labels of one image "
                            "(multilabel)")
    hierarchy_sep: str = option("/", "separator of path labels such as footwear/sneaker "
                                "(hierarchical)")
    test_fraction: float = option(0.2, "share of the images held out as the test set when a "
                                  "folder dataset has no test/ folder", low=0.0, high=1.0,
                                  open_low=True, open_high=True)
    val_fraction: float = option(0.2, "share of the training images held out for validation; "
                                 "0 trains on all of them, with no validation: the last "
                                 "epoch is kept, no early stopping, thresholds stay at 0.5",
                                 low=0.0, high=1.0, open_high=True)
    subset: int | None = option(None, "train on a stratified subset of this many training images "
                                "(validation is split from it); all when unset", low=20)
    image_size: int | None = option(None, "resize images to this many pixels a side; when unset, "
                                    "a timm model's input size, else native (Fashion-MNIST) or "
                                    "the median shortest edge of a folder dataset, at most 128",
                                    low=8, high=1024)
    fit: str = option("squash", "how a folder's images become square when decoded: squash "
                      "(resize, the whole image) or crop (shorter edge to size, centre crop)",
                      choices=("squash", "crop"))
    crop_pct: float = option(1.0, "share of the decoded side the model sees: images are decoded "
                             "at image_size / crop_pct, training takes random crops of them "
                             "and evaluation the centre (timm's crop_pct); 1 = no margin",
                             low=0.5, high=1.0)
    train_size: int | None = option(None, "side of the random resized crops training sees, "
                                    "px (default: image_size): smaller trains faster, while "
                                    "validation and tests keep image_size (needs "
                                    "--crop-scale, as the photo preset has)", low=8, high=1024)
    early_size: int | None = option(None, "side of the random resized crops of the first "
                                    "--early-epochs epochs, px (progressive resizing: cheaper "
                                    "epochs while the new head and the top layers settle, the "
                                    "rest at --train-size)", low=8, high=1024)
    interpolation: str | None = option(None, "resampling when resizing; default the "
                                       "pretrained model's (timm), else bilinear",
                                       choices=("bilinear", "bicubic", "nearest"))
    workers: int | None = option(None, "processes decoding a folder dataset's images (default: "
                                 "every core)", low=1, high=256)
    cache_dir: str | None = option(None, "where downloaded datasets and decoded images are kept "
                                   "(default ~/.cache/imclass)")
    relabel: str | None = option(None, "a corrections CSV (imclass labels writes one): its "
                                 "relabel rows give those images their new_label")
    exclude: str | None = option(None, "a corrections CSV, or a CSV of image names: its "
                                 "exclude rows (every row, without an action column) are "
                                 "left out")

    def training_side(self, input_side: int) -> int:
        """The side of the images training sees: --train-size's random crops, else the
        model's input side (validation and tests always see the input side)."""
        return self.train_size or input_side


# Each augmentation has a probability (share of the images in a batch it is applied to) and a
# magnitude. None means "take it from the preset"; `resolve()` fills them in, so the saved
# config.yaml always holds the concrete values that ran.
@dataclass(frozen=True)
class AugmentConfig:
    preset: str = option("fashion", "augmentation preset; its values fill every field left unset",
                         choices=("none", "fashion", "light", "strong", "photo"), flag="augment")
    hflip_p: float | None = option(None, "probability of a horizontal flip", low=0, high=1)
    vflip_p: float | None = option(None, "probability of a vertical flip", low=0, high=1)
    rotate_p: float | None = option(None, "probability of a rotation", low=0, high=1)
    rotate_degrees: float | None = option(None, "largest rotation, degrees either way",
                                          low=0, high=180)
    shift_p: float | None = option(None, "probability of a random scale and shift (crop)",
                                   low=0, high=1)
    shift: float | None = option(None, "largest shift, as a fraction of the image side",
                                 low=0, high=0.5)
    scale: float | None = option(None, "largest zoom in or out, as a fraction (0.1 = 0.9x to 1.1x)",
                                 low=0, high=0.9)
    crop_scale: float | None = option(None, "random resized crop (photos): the smallest share "
                                      "of the image's area a crop keeps, resized to the "
                                      "model's input; 0 = none", low=0, high=1)
    brightness_p: float | None = option(None, "probability of a brightness change", low=0, high=1)
    brightness: float | None = option(None, "largest brightness change (fraction)", low=0, high=1)
    contrast_p: float | None = option(None, "probability of a contrast change", low=0, high=1)
    contrast: float | None = option(None, "largest contrast change (fraction)", low=0, high=1)
    saturation_p: float | None = option(None, "probability of a saturation change "
                                        "(colour images only)", low=0, high=1)
    saturation: float | None = option(None, "largest saturation change (fraction)", low=0, high=1)
    noise_p: float | None = option(None, "probability of added Gaussian noise", low=0, high=1)
    noise_std: float | None = option(None, "noise standard deviation, in [0, 1] pixel units",
                                     low=0, high=1)
    blur_p: float | None = option(None, "probability of a Gaussian blur", low=0, high=1)
    blur_sigma: float | None = option(None, "largest blur sigma, pixels", low=0.1, high=10)
    erase_p: float | None = option(None, "probability of random erasing: a rectangle of the "
                                   "image set to black (Zhong et al., 2017)", low=0, high=1)
    erase_area: float | None = option(None, "largest erased share of the image area (the "
                                      "smallest is 0.02)", low=0.02, high=1)


_NO_AUGMENT = dict(hflip_p=0.0, vflip_p=0.0, rotate_p=0.0, rotate_degrees=0.0, shift_p=0.0,
                   shift=0.0, scale=0.0, brightness_p=0.0, brightness=0.0, contrast_p=0.0,
                   contrast=0.0, saturation_p=0.0, saturation=0.0, noise_p=0.0, noise_std=0.0,
                   blur_p=0.0, blur_sigma=1.0, crop_scale=0.0, erase_p=0.0, erase_area=0.2)


def _preset(name: str, **values: float) -> AugmentConfig:
    return AugmentConfig(preset=name, **{**_NO_AUGMENT, **values})


# The values each `--augment` preset gives the fields left unset (`resolve` fills them in).
AUGMENT_PRESETS = {
    "none": _preset("none"),
    # Fashion-MNIST: garments are centred, upright and left-right symmetric in meaning, so a
    # horizontal flip and a small shift help; vertical flips and big rotations would not.
    "fashion": _preset("fashion", hflip_p=0.5, shift_p=0.5, shift=0.1),
    "light": _preset("light", hflip_p=0.5, shift_p=0.5, shift=0.08, scale=0.05,
                     brightness_p=0.3, brightness=0.2, contrast_p=0.3, contrast=0.2),
    "strong": _preset("strong", hflip_p=0.5, rotate_p=0.5, rotate_degrees=15.0, shift_p=0.7,
                      shift=0.12, scale=0.15, brightness_p=0.5, brightness=0.3, contrast_p=0.5,
                      contrast=0.3, saturation_p=0.5, saturation=0.3, noise_p=0.3,
                      noise_std=0.03, blur_p=0.2, blur_sigma=1.0),
    # photos: a random crop of a third of the area or more, resized to the input (objects
    # at any place and scale), a mirror image, and the light and colour of another camera
    "photo": _preset("photo", hflip_p=0.5, crop_scale=0.35, brightness_p=0.5, brightness=0.25,
                     contrast_p=0.5, contrast=0.25, saturation_p=0.5, saturation=0.25),
}


# Our own networks (imclass.models.cnn): configured by widths and depths, no pretrained
# weights. The registry's names, spelt here because config sits below models (test_models).
OWN_MODELS = ("cnn", "rescnn")


@dataclass(frozen=True)
class ModelConfig:
    name: str = option("cnn", "model: cnn or rescnn (ours) or any timm architecture (resnet50, "
                       "vgg19, legacy_xception, inception_v3, efficientnet_lite0, ...; imclass "
                       "models lists them)", flag="model")
    pretrained: bool = option(False, "start from ImageNet weights (timm models): the hub when "
                              "online, the installed package for efficientnet_lite0 offline")
    weights: str | None = option(None, "start from a local weights file (.safetensors, .pth "
                                 "state dict) or an imclass run folder; mismatched tensors "
                                 "(the head) are initialised anew")
    # The default: four stages (28, 14, 7, 3 px a side for Fashion-MNIST), 12.4 MFLOPs per
    # image; it reaches 93% test accuracy in 10 epochs on 2 CPU cores (docs/benchmarks.md).
    widths: tuple[int, ...] = option((16, 32, 64, 128), "channels of each CNN stage", low=1,
                                     high=4096)
    depths: tuple[int, ...] = option((1, 2, 2, 1), "3x3 conv layers in each CNN stage (cnn, at "
                                     "least 1), residual blocks after its first conv (rescnn)",
                                     low=0, high=16)
    dropout: float = option(0.2, "dropout before the classification head", low=0, high=1,
                            open_high=True)


@dataclass(frozen=True)
class TrainConfig:
    budget: float | None = option(None, "a time budget for the whole run, from process "
                                  "start to the report: 90s, 5m, 1h30m (seconds when a plain "
                                  "number). A short measurement of this machine then picks the "
                                  "model, image size, epochs and validation share, and the "
                                  "learning-rate schedule follows the clock so the run anneals "
                                  "and ends on time; keys you set still win. imclass tune: the "
                                  "whole search's budget, shared among its trials",
                                  low=10, high=30 * 24 * 3600, flag="budget")
    recipe: str = option("auto", "auto: a folder of your own images gets the model, image size, "
                         "batch size, epochs, learning rate, fine-tuning and augmentation "
                         "chosen from its images and this machine, for every key you leave "
                         "unset; none: the plain defaults below (Fashion-MNIST's recipe); "
                         "long: an hour on a CPU for a better model (a residual CNN, 40 "
                         "epochs of Fashion-MNIST, random erasing)",
                         choices=("auto", "none", "long"))
    epochs: int = option(10, "passes over the training split", low=1, high=10_000)
    batch_size: int = option(256, "images per optimisation step; when unset, on a CPU at "
                             "most 16 images at 224 px (the pixels of 16 x 224 x 224: 64 at "
                             "96 px), the learning rate scaled alike", low=1, high=65_536)
    lr: float = option(0.2, "peak learning rate; auto runs the learning-rate range test "
                       "(imclass lr-find) first and takes its suggestion", low=0, high=10,
                       open_low=True)
    optimizer: str = option("sgd", "optimiser (SGD uses Nesterov momentum)",
                            choices=("sgd", "adam", "adamw", "rmsprop"))
    momentum: float = option(0.9, "momentum for sgd and rmsprop", low=0, high=1, open_high=True)
    loss: str = option("cross-entropy", "loss: cross-entropy, or mse on one-hot targets",
                       choices=("cross-entropy", "mse"))
    label_smoothing: float = option(0.1, "cross-entropy label smoothing", low=0, high=1,
                                    open_high=True)
    weight_decay: float = option(5e-4, "L2 penalty (decoupled for adamw); not applied to "
                                 "biases and BatchNorm", low=0, high=1)
    l1: float = option(0.0, "L1 penalty on conv and linear weights, added to the loss",
                       low=0, high=1)
    schedule: str = option("onecycle", "learning-rate schedule over the whole run, per step",
                           choices=("onecycle", "cosine", "constant"))
    warmup_fraction: float = option(0.25, "share of the run spent warming up (onecycle)",
                                    low=0, high=1, open_low=True, open_high=True)
    patience: int | None = option(5, "stop after this many epochs without a validation "
                                  "improvement (of --select-metric); never when unset", low=1)
    min_delta: float = option(0.0, "smallest change of the validation figure (--select-metric) "
                              "that counts as an improvement", low=0)
    balance: str = option("auto", "imbalanced classes: weights (the loss weighs each class by "
                          "the inverse of its training count; multilabel: each label's "
                          "positives against its negatives), sqrt (by the inverse square "
                          "root: a milder shift), effective (weighted by the "
                          "'effective number of samples', milder for very rare classes), "
                          "sampler (batches draw every class equally often) or none; auto: "
                          "sqrt when the largest class has over 3x the training images of "
                          "the smallest, else none",
                          choices=("auto", "weights", "sqrt", "effective", "sampler", "none"))
    select_metric: str = option("auto", "the validation figure that picks the best epoch, "
                                "stops early and ranks a search's trials: loss, accuracy, "
                                "balanced-accuracy (the mean of the per-class recalls) or "
                                "macro-f1; auto: balanced-accuracy when --balance is on, "
                                "else loss",
                                choices=("auto", "loss", "accuracy", "balanced-accuracy",
                                         "macro-f1"))
    ema: float | None = option(None, "keep an exponential moving average of the weights "
                               "(and BatchNorm statistics), this much of the old average kept "
                               "per step (e.g. 0.999), and validate, checkpoint and test the "
                               "average; off when unset (a folder's recipe sets 0.999; "
                               "'none' turns it off)", low=0, high=1, open_low=True,
                               open_high=True)
    tta: bool = option(False, "test-time flips: the model averages its probabilities over each "
                       "image and its copies flipped as in training (twice the cost of a "
                       "prediction); the test figures, predict, serve and exported files all "
                       "do it. A --budget sets it (Fashion-MNIST, photos)")
    tta_shift: int = option(0, "test-time moves, px at the network's input: the model also "
                            "averages over each image moved this far up, down, left and right "
                            "(each with its --tta flips; five times the cost of a prediction), "
                            "within the --shift training drew; 0 for none", low=0)
    overfit_epochs: int = option(3, "warn of overfitting after this many epochs in a row of "
                                 "rising validation loss and falling training loss", low=2)
    seed: int = option(0, "seed for the split, the batch order, augmentation and the weights",
                       low=0)
    channels_last: bool = option(True, "images and weights in the channels-last memory layout "
                                 "(faster convolutions); false: PyTorch's default layout. "
                                 "The two round differently, so runs differ slightly")
    compile: bool = option(False, "torch.compile the model for training (inductor): pays on a "
                           "GPU; the first steps spend a minute compiling, and a model it "
                           "cannot compile trains eagerly (PyTorch warns)")
    cuda_graphs: str = option("auto", "record the training forward and backward as CUDA graphs "
                              "and replay them every step (one launch instead of hundreds: "
                              "small models on a GPU wait on launches); auto: on CUDA for "
                              "cnn and rescnn, not with --compile or several processes",
                              choices=("auto", "on", "off"))
    sync_bn: bool = option(True, "with several processes (torchrun, --nproc), BatchNorm "
                           "statistics over the whole global batch, as in one process")
    checkpoint_minutes: float = option(10.0, "save the resume state at least every this "
                                       "many minutes, inside a long epoch too, so a killed run "
                                       "loses at most that (at epoch ends it is saved whenever "
                                       "that costs under 2% of the time); 0: at every epoch's "
                                       "end only", low=0, high=10_000)
    precision: str = option("auto", "arithmetic of the training steps and validation passes: "
                            "bf16 mixed precision (autocast) or fp32; auto: bf16 on a CUDA "
                            "GPU and on a CPU that multiplies bf16 natively (AMX units: Intel "
                            "Xeon Sapphire Rapids and later; AVX512-BF16: AMD Zen 4 and "
                            "later), fp32 elsewhere. Test evaluation and prediction stay fp32 "
                            "on a CPU", choices=("auto", "bf16", "fp32"))
    device: str = option("auto", "where to train: cuda (with mixed precision) when present, "
                         "else cpu", choices=("auto", "cpu", "cuda"))
    eval_batch_size: int = option(1024, "images per forward pass when evaluating; when unset, "
                                  "at most 32 images at 224 px (174 at 96 px)", low=1)
    freeze_epochs: int = option(0, "first train only the new head for this many epochs, the "
                                "backbone frozen (BatchNorm statistics too), then unfreeze",
                                low=0)
    early_epochs: int = option(0, "the first epochs, trained on --early-size crops", low=0)
    feature_views: int = option(0, "with --freeze-epochs: train the head on the frozen "
                                "backbone's features, computed once for this many augmented "
                                "views of each training image (0: recompute every epoch)",
                                low=0, high=64)
    fine_tune_lr: float | None = option(None, "peak learning rate after unfreezing (default: "
                                        "a tenth of --lr)", low=0, high=10, open_low=True)
    lr_mult: float = option(1.0, "discriminative learning rates when fine-tuning: each layer "
                            "group below the head gets this times the rate of the one above",
                            low=0, high=1, open_low=True)
    freeze_bn: bool = option(False, "keep BatchNorm running statistics as pretrained while "
                             "fine-tuning (scale and shift still train); helps small datasets")
    unfreeze: str = option("all", "what to unfreeze after --freeze-epochs: all, or last-N "
                           "(the N layer groups nearest the head)")


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # The keys given by the user (flags, --config, `override`): a recipe never changes them.
    # Not a setting, so not in config.yaml; a saved config passed back sets every key.
    explicit: frozenset = field(default=frozenset(), compare=False, repr=False)


SECTIONS = {f.name: f.type for f in dataclasses.fields(RunConfig) if f.name != "explicit"}
_SECTION_TYPES = {k: v for k, v in typing.get_type_hints(RunConfig).items() if k in SECTIONS}


def section_fields() -> dict[str, tuple[str, dataclasses.Field, Any]]:
    """Every config key: name -> (section, dataclass field, resolved type)."""
    keys = {}
    for section, cls in _SECTION_TYPES.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            keys[f.name] = (section, f, hints[f.name])
    return keys


KEYS = section_fields()
# A flag named differently from its key (--data for source, --model for name, --augment for
# preset) is accepted as a flat key too, so `{"model": "cnn"}` means what `--model cnn` does.
ALIASES = {f.metadata["flag"]: name for name, (_s, f, _t) in KEYS.items() if f.metadata["flag"]}


def unknown_key_error(key: str, valid: list[str], what: str = "config key") -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(valid))}"
    return ConfigError(f"unknown {what} '{key}'{hint}")


def coerce(key: str, value: Any, typ: Any) -> Any:
    """Turn a YAML or command-line value into the field's type, or say why it cannot be."""
    args = typing.get_args(typ)
    optional = type(None) in args
    if value is None or (optional and isinstance(value, str)
                         and value.lower() in ("none", "null", "")):
        if optional:
            return None
        raise ConfigError(f"'{key}' needs a value")
    if type(None) in args:  # Optional[X]: coerce to X
        typ = next(a for a in args if a is not type(None))
        args = typing.get_args(typ)
    if typing.get_origin(typ) is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"'{key}' takes a list such as 32,64,128; got {value!r}")
        return tuple(coerce(key, v, args[0]) for v in items)
    if isinstance(value, (list, tuple, dict, set)):
        raise ConfigError(f"'{key}' takes one value; got {value!r}")
    try:
        if typ is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
                    raise ValueError
                return value.lower() in ("true", "yes", "1")
            return bool(value)
        if typ is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if typ is float:
            if isinstance(value, bool) or not math.isfinite(float(value)):
                raise ValueError  # nan would slip past every range check
            return float(value)
        return str(value)
    except (ValueError, TypeError, OverflowError):
        raise ConfigError(f"'{key}' must be {typ.__name__}; got {value!r}") from None


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, key: str = "budget") -> float | None:
    """Seconds in a duration such as 90s, 5m, 1h30m or 2.5h (a plain number is seconds);
    none/null/empty: no budget."""
    spoken = text.strip().lower().replace(" ", "")
    if spoken in ("none", "null", ""):
        return None
    try:
        return float(spoken)
    except ValueError:
        pass
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", spoken)
    if not parts or "".join(n + u for n, u in parts) != spoken:
        raise ConfigError(f"'{key}' takes a duration such as 90s, 5m or 1h30m; got {text!r}")
    return sum(float(n) * DURATION_UNITS[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    """90 -> 1m30s, 300 -> 5m, 3600 -> 1h, 45.5 -> 46s: how a budget is said back."""
    total = round(seconds)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    text = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{s}s" if s else "")
    return text or "0s"


def _check_value(key: str, value: Any, meta: dict) -> None:
    """Refuse a value outside the field's choices or range, saying which values are allowed."""
    if value is None:
        return
    for v in value if isinstance(value, tuple) else (value,):
        if meta["choices"] and v not in meta["choices"]:
            close = difflib.get_close_matches(str(v), meta["choices"], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"'{key}' must be one of {', '.join(meta['choices'])}; "
                              f"got '{v}'{hint}")
        low, high = meta["low"], meta["high"]
        too_low = low is not None and (v <= low if meta["open_low"] else v < low)
        too_high = high is not None and (v >= high if meta["open_high"] else v > high)
        if too_low or too_high:
            raise ConfigError(f"'{key}' must be in {describe_range(meta)}; got {v}")


def describe_range(meta: dict) -> str:
    lo = "(" if meta["open_low"] else "["
    hi = ")" if meta["open_high"] else "]"
    low = "-inf" if meta["low"] is None else f"{meta['low']:g}"
    high = "inf" if meta["high"] is None else f"{meta['high']:g}"
    if meta["high"] is None:
        hi = ")"
    return f"{lo}{low}, {high}{hi}"


def override(cfg: RunConfig, values: dict[str, Any]) -> RunConfig:
    """A new config with `values` applied; keys are flat (`lr`) or dotted (`train.lr`)."""
    per_section: dict[str, dict[str, Any]] = {}
    for key, raw in values.items():
        name = key.split(".", 1)[1] if "." in key else ALIASES.get(key, key)
        if name not in KEYS or ("." in key and KEYS[name][0] != key.split(".", 1)[0]):
            raise unknown_key_error(key, list(KEYS))
        section, f, typ = KEYS[name]
        if name == "budget" and isinstance(raw, str):
            raw = parse_duration(raw, key)
        if name == "lr" and isinstance(raw, str) and raw.strip().lower() == "auto":
            per_section.setdefault(section, {})[name] = "auto"  # found by imclass.lr_find
            continue
        value = coerce(key, raw, typ)  # messages name the key as the user wrote it
        _check_value(key, value, f.metadata)
        per_section.setdefault(section, {})[name] = value
    changes = {s: dataclasses.replace(getattr(cfg, s), **v) for s, v in per_section.items()}
    named = frozenset(name for section in per_section.values() for name in section)
    return validate(dataclasses.replace(cfg, **changes, explicit=cfg.explicit | named))


def user_set(cfg: RunConfig) -> frozenset[str]:
    """The keys the user chose: given through `override` (flags, YAML), or set to something
    other than the default when the dataclasses were built by hand."""
    changed = {name for name, (section, f, _t) in KEYS.items()
               if getattr(getattr(cfg, section), name) != f.default}
    return cfg.explicit | changed


def validate(cfg: RunConfig) -> RunConfig:
    """Checks that span fields. Returns the config unchanged so calls can be chained. Names
    looked up in a registry (the dataset, the model) are checked next to their registries,
    when a run is prepared (`run_setup.check_names`)."""
    if (cfg.data.relabel or cfg.data.exclude) and cfg.data.source == "fashion-mnist":
        raise ConfigError("--relabel and --exclude correct a folder dataset of your own; "
                          "fashion-mnist's files are not yours to relabel")
    if not cfg.data.label_sep or cfg.data.hierarchy_sep in cfg.data.label_sep:
        raise ConfigError("'label_sep' needs at least one character, none of them the "
                          f"hierarchy separator '{cfg.data.hierarchy_sep}'")
    m = cfg.model
    if m.pretrained and m.weights:
        raise ConfigError("give --pretrained or --weights, not both")
    if m.name in OWN_MODELS and m.pretrained:
        raise ConfigError("--pretrained needs a timm model (imclass models --pretrained lists "
                          f"them); {m.name} has no pretrained weights (--weights RUN_DIR reuses "
                          "an earlier run's)")
    t = cfg.train
    if t.unfreeze != "all" and not re.fullmatch(r"last-[1-9]\d*", t.unfreeze):
        raise ConfigError(f"'unfreeze' must be all or last-N (N layer groups from the top, "
                          f"e.g. last-2); got '{t.unfreeze}'")
    if t.freeze_epochs >= t.epochs:
        raise ConfigError(f"--freeze-epochs ({t.freeze_epochs}) must be fewer than --epochs "
                          f"({t.epochs}): the epochs after it fine-tune the whole network")
    if m.name in OWN_MODELS and len(m.widths) != len(m.depths):
        raise ConfigError(f"'widths' has {len(m.widths)} stages but 'depths' has "
                          f"{len(m.depths)}; give both the same number of entries")
    if m.name == "cnn" and 0 in m.depths:
        raise ConfigError("the cnn needs at least one conv layer in every stage: give each "
                          "of 'depths' 1 or more (a depth of 0 is for rescnn)")
    return cfg


def from_dict(data: dict[str, Any], base: RunConfig | None = None) -> RunConfig:
    """A config from a nested mapping (as in YAML: `train: {lr: 0.1}`) or flat keys."""
    if not isinstance(data, dict):
        raise ConfigError("a config file must hold a mapping of keys to values")
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"config section '{key}' must be a mapping of keys to values")
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return override(base or RunConfig(), flat)


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The nested plain-data form (lists, not tuples) that YAML and JSON can hold."""
    def plain(v):
        return list(v) if isinstance(v, tuple) else v
    return {s: {k: plain(v) for k, v in dataclasses.asdict(getattr(cfg, s)).items()}
            for s in SECTIONS}


def read_yaml(path: str | Path, what: str):
    """The parsed content of a YAML file the user named (`what`: "config file", ...); a
    missing file, a folder, bytes that are not UTF-8 or broken YAML are one ConfigError
    naming the file (and the line)."""
    import yaml
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; give the YAML file itself")
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}); save it as "
                          "UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        tab = "\\t" in problem  # PyYAML writes the tab it choked on as \t
        hint = "; YAML indents with spaces, not tabs" if tab else ""
        raise ConfigError(f"{path} is not valid YAML ({where}{problem}){hint}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror})") from None


def load_yaml(path: str | Path, base: RunConfig | None = None) -> RunConfig:
    path = Path(path)
    data = read_yaml(path, "config file") or {}
    try:
        return from_dict(data, base)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def save_yaml(cfg: RunConfig, path: str | Path) -> None:
    import yaml
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")


def resolve(cfg: RunConfig) -> RunConfig:
    """Fill the augmentation fields left unset from the chosen preset."""
    preset = AUGMENT_PRESETS[cfg.augment.preset]
    filled = {k: getattr(preset, k) for k in preset.__dataclass_fields__
              if k != "preset" and getattr(cfg.augment, k) is None}
    return dataclasses.replace(cfg, augment=dataclasses.replace(cfg.augment, **filled))


def reference_markdown() -> str:
    """docs/configuration.md, generated from the fields above so the two never disagree."""
    lines = ["# Configuration", "",
             "Generated by `python -m imclass.config` from `imclass/config.py`; do not edit by hand.",
             "", "Every key can be set in a YAML file (`--config`, nested under its section) or "
             "as a flag; flags win. Unset augmentation values come from the `augment` preset.", ""]
    for section in SECTIONS:
        lines += [f"## `{section}`", "", "| key | flag | default | allowed | meaning |",
                  "| --- | --- | --- | --- | --- |"]
        for name, (sec, f, _typ) in KEYS.items():
            if sec != section:
                continue
            meta = f.metadata
            default = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
            allowed = (", ".join(meta["choices"]) if meta["choices"] else
                       describe_range(meta) if meta["low"] is not None or meta["high"] is not None
                       else "")
            flag = "--" + (meta["flag"] or name).replace("_", "-")
            lines.append(f"| `{name}` | `{flag}` | {default} | {allowed} | {meta['help']} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference_markdown(), end="")
