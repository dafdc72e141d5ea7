"""What a trained model promises a caller outside imclass, and the network that keeps it.

The contract: the class names, the task and its decision thresholds, the hierarchy separator,
the input (channels, the side images are resized to, the side the network sees after a centre
crop, how an image is fitted: squashed or cropped, the resampling filter), the normalization,
and the run's test figures. It travels with every exported file (ONNX metadata, TorchScript
and torch.export extra files), so the file alone is enough to predict; docs/deploy.md lists
the keys for callers in other languages.

`PixelModel` wraps the trained network so that it takes what a caller has: uint8 pixels
[N, C, decoded, decoded]. Scaling, the centre crop, normalization and softmax (or sigmoid)
are inside it, so the eager model, the exported graphs and every caller compute the same
probabilities from the same pixels.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn

from imclass.errors import DataError
from imclass.version import __version__

# ONNX metadata_props hold strings: each key below holds its value JSON-encoded.
METADATA_KEYS = ("imclass_version", "task", "class_names", "thresholds", "hierarchy_sep",
                 "input_channels", "input_size", "decoded_size", "fit", "interpolation",
                 "mean", "std", "test_metrics")


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
                   mean=tuple(norm["mean"]), std=tuple(norm["std"]), test_metrics=scalars)

    def to_metadata(self) -> dict[str, str]:
        values = asdict(self)
        return {k: json.dumps(values[k]) for k in METADATA_KEYS}

    @classmethod
    def from_metadata(cls, props: dict[str, str], source: str) -> "Contract":
        """From a file's metadata; a missing or garbled key is refused, naming it and the file."""
        values = {}
        for f in fields(cls):
            if f.name not in props:
                raise DataError(f"{source} has no '{f.name}' in its metadata; it was not "
                                "written by imclass export (re-export it from its run folder)")
            try:
                values[f.name] = json.loads(props[f.name])
            except json.JSONDecodeError:
                raise DataError(f"{source}: metadata key '{f.name}' is not valid JSON") from None
        for key in ("class_names", "thresholds", "mean", "std"):
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
                "test_metrics": self.test_metrics, "imclass_version": self.imclass_version}


class PixelModel(nn.Module):
    """uint8 pixels [N, C, decoded, decoded] -> probabilities float32 [N, K]."""

    def __init__(self, network: nn.Module, contract: Contract):
        super().__init__()
        self.network = network
        c = contract.input_channels
        self.register_buffer("mean", torch.tensor(contract.mean, dtype=torch.float32)
                             .view(1, c, 1, 1))
        self.register_buffer("std", torch.tensor(contract.std, dtype=torch.float32)
                             .view(1, c, 1, 1))
        margin = contract.decoded_size - contract.input_size
        self.top = margin // 2  # the same centre as imclass.data.images.center_crop
        self.side = contract.input_size
        self.sigmoid = contract.task == "multilabel"

    def normalized(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.float() / 255.0
        x = x[:, :, self.top:self.top + self.side, self.top:self.top + self.side]
        return (x - self.mean) / self.std

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        logits = self.network(self.normalized(pixels)).float()
        return logits.sigmoid() if self.sigmoid else logits.softmax(dim=1)

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """The penultimate features [N, D] the head reads (imclass.similarity)."""
        return self.network.embed(self.normalized(pixels))
