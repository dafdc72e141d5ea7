"""Checkpoints: weights in safetensors plus a JSON sidecar with all it takes to use them.

Both files are written to a temporary name and renamed into place, so a crash never leaves a
half-written checkpoint. Loading reads tensors and JSON only: nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from imclass.atomic import atomic_write, atomic_write_text, json_text
from imclass.errors import DataError


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save(stem: Path, model: torch.nn.Module, meta: dict[str, Any]) -> None:
    """Write stem.safetensors and stem.json; the sidecar records the weights' SHA-256."""
    stem = Path(stem)
    weights = stem.with_suffix(".safetensors")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(weights, lambda tmp: save_file(state, str(tmp)))
    sidecar = {**meta, "weights_file": weights.name, "weights_sha256": _sha256(weights)}
    atomic_write_text(stem.with_suffix(".json"), json_text(sidecar))


def load(stem: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, sidecar) of a checkpoint, checking the weights match their sidecar."""
    stem = Path(stem)
    sidecar_path, weights = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    for p in (sidecar_path, weights):
        if not p.is_file():
            raise DataError(f"checkpoint file {p} is missing; is this a finished imclass run?")
    try:
        meta = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{sidecar_path} is not valid JSON ({exc})") from None
    if meta.get("weights_sha256") != _sha256(weights):
        raise DataError(f"{weights} does not match the checksum in {sidecar_path}; the "
                        "checkpoint is damaged or its files come from different runs")
    return load_file(str(weights)), meta
