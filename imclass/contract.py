"""What a trained model promises a caller outside imclass.

The contract: the class names, the task and its decision thresholds, the hierarchy separator,
the input (channels, the side images are resized to, the side the network sees after a centre
crop, how an image is fitted: squashed or cropped, the resampling filter), the normalization,
and the run's test figures. It travels with every exported file (ONNX metadata, TorchScript
and torch.export extra files), so the file alone is enough to predict; docs/deploy.md lists
the keys for callers in other languages.

The network that keeps it is imclass.pixel_model.PixelModel. This module imports no torch:
`imclass predict` over a run's ONNX network reads the contract without it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from imclass.errors import DataError
from imclass.version import __version__

# ONNX metadata_props hold strings: each key below holds its value JSON-encoded.
METADATA_KEYS = ("imclass_version", "task", "class_names", "thresholds", "hierarchy_sep",
                 "input_channels", "input_size", "decoded_size", "fit", "interpolation",
                 "mean", "std", "test_metrics", "flips", "shift")
# Keys a file exported before they existed may lack, and what such a file means by them.
OPTIONAL_KEYS = {"flips": (), "shift": 0}


@dataclass(frozen=True)
class Contract:
    class_names: tuple[str, ...]
    task: str                   # multiclass | binary | multilabel | hierarchical
    thresholds: tuple[float, ...] | None  # binary: one; multilabel: one per label
    hierarchy_sep: str
    input_channels: int         # 1 greyscale, 3 RGB
    input_size: int             # side the network sees, px
    decoded_size: int           # side an image is resized to before the centre crop, px
    fit: str                    # squash (whole image resized) | crop (shorter edge, centre)
    interpolation: str          # bilinear | bicubic | nearest (Pillow's filters)
    mean: tuple[float, ...]     # per channel, of pixels scaled to [0, 1]
    std: tuple[float, ...]
    test_metrics: dict = field(default_factory=dict)  # the run's scalar test figures
    # tensor dims the probabilities are averaged over (-1 horizontal, -2 vertical): the
    # test-time flips of a run trained with --tta; () for none
    flips: tuple[int, ...] = ()
    # px each image is also moved by, up, down, left and right, the five views averaged (each
    # with its flips): a run trained with --tta-shift; 0 for none
    shift: int = 0
    imclass_version: str = __version__

    @classmethod
    def of_run(cls, meta: dict, test_metrics: dict | None = None) -> "Contract":
        """From a checkpoint's sidecar (and the run's metrics.json "test" figures)."""
        spec, norm = meta["input"], meta["normalization"]
        thresholds = meta.get("thresholds")
        scalars = {k: v for k, v in (test_metrics or {}).items()
                   if isinstance(v, (int, float, str)) and k != "source"}
        return cls(class_names=tuple(meta["class_names"]), task=meta["task"],
                   thresholds=tuple(thresholds) if thresholds else None,
                   hierarchy_sep=meta.get("hierarchy_sep", "/"),
                   input_channels=spec["channels"], input_size=spec["height"],
                   decoded_size=spec.get("decoded", spec["height"]),
                   fit=spec.get("fit", "squash"),
                   interpolation=meta["config"]["data"].get("interpolation") or "bilinear",
                   mean=tuple(norm["mean"]), std=tuple(norm["std"]), test_metrics=scalars,
                   flips=test_time_flips(meta["config"]),
                   shift=test_time_shift(meta["config"]))

    def to_metadata(self) -> dict[str, str]:
        values = asdict(self)
        return {k: json.dumps(values[k]) for k in METADATA_KEYS}

    @classmethod
    def from_metadata(cls, props: dict[str, str], source: str) -> "Contract":
        """From a file's metadata; a missing or garbled key is refused, naming it and the file."""
        values = {}
        for f in fields(cls):
            if f.name not in props and f.name in OPTIONAL_KEYS:
                values[f.name] = OPTIONAL_KEYS[f.name]
                continue
            if f.name not in props:
                raise DataError(f"{source} has no '{f.name}' in its metadata; it was not "
                                "written by imclass export (re-export it from its run folder)")
            try:
                values[f.name] = json.loads(props[f.name])
            except json.JSONDecodeError:
                raise DataError(f"{source}: metadata key '{f.name}' is not valid JSON") from None
        for key in ("class_names", "thresholds", "mean", "std", "flips"):
            if values[key] is not None:
                values[key] = tuple(values[key])
        return cls(**values)

    def describe(self) -> dict:
        """What `imclass serve`'s /model returns."""
        return {"classes": list(self.class_names), "task": self.task,
                "thresholds": list(self.thresholds) if self.thresholds else None,
                "hierarchy_sep": self.hierarchy_sep if self.task == "hierarchical" else None,
                "input": {"channels": self.input_channels, "decoded_size": self.decoded_size,
                          "input_size": self.input_size, "fit": self.fit,
                          "interpolation": self.interpolation},
                "test_time_flips": list(self.flips), "test_time_shift": self.shift,
                "test_metrics": self.test_metrics, "imclass_version": self.imclass_version}


def flip_dims(hflip_p: float | None, vflip_p: float | None) -> tuple[int, ...]:
    """The tensor dims of the flips an augmentation draws (-1 horizontal, -2 vertical): the
    only flips a model was trained to be indifferent to, so the only fair ones at test time."""
    return tuple(dim for dim, p in ((-1, hflip_p), (-2, vflip_p)) if p)


def test_time_flips(config: dict) -> tuple[int, ...]:
    """The flips a run's model averages over (a run's config as a dict): its training flips
    when it was trained with --tta, else none."""
    if not config.get("train", {}).get("tta"):
        return ()
    augment = config.get("augment", {})
    return flip_dims(augment.get("hflip_p"), augment.get("vflip_p"))


def test_time_shift(config: dict) -> int:
    """The px a run's model moves each image by at test time (a run's config as a dict)."""
    return int(config.get("train", {}).get("tta_shift") or 0)


def check_written_by_us(meta: dict, sidecar: Path) -> None:
    """Refuse a run folder written by a newer imclass: it may hold what this one misreads."""
    written = str((meta.get("versions") or {}).get("imclass", "0"))

    def parts(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split(".")[:3] if x.isdigit())
    if parts(written) > parts(__version__):
        raise DataError(f"{sidecar} was written by imclass {written}, newer than this "
                        f"imclass {__version__}; upgrade imclass to use this run")
