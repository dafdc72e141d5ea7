"""The training state saved after an epoch (paced so that writing it takes at most 2% of the
time, imclass.timekeeping.Pace; after the last epoch always) and every --checkpoint-minutes
inside a long one, so `imclass train --resume RUN_DIR` continues a killed run and ends with
the same model as one never interrupted (on the same device).

checkpoints/state.safetensors holds every tensor: the current and the best weights (and their
moving average, with --ema), the optimizer's buffers, torch's random generator and the batch
order's. checkpoints/state.json holds the rest: where the loop is (epoch, fine-tuning stage,
epochs done in it), the scheduler, the optimizer's settings, numpy's and Python's generators,
the history, best-so-far and the overfitting watch, and the SHA-256 of the tensors file.
Each file is written atomically, in three steps: the new tensors beside the old ones
(state.next.safetensors), the JSON with their checksum, then the rename of the new tensors
over the old. A kill before the JSON leaves the previous state whole; one after it leaves the
new tensors beside, and loading finishes the rename. Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from imclass.atomic import atomic_write, atomic_write_text
from imclass.errors import DataError

STATE = "state"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def split_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer state_dict as (tensors by 'optimizer.<param>.<name>', the JSON rest)."""
    tensors, plain = {}, {"param_groups": state["param_groups"], "state": {}}
    for index, buffers in state["state"].items():
        plain["state"][str(index)] = []
        for name, value in buffers.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                plain["state"][str(index)].append([name, value])
    return tensors, plain


def join_optimizer(tensors: dict[str, torch.Tensor], plain: dict) -> dict:
    state: dict = {int(i): dict(items) for i, items in plain["state"].items()}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": plain["param_groups"]}


def save(folder: Path, *, model: torch.nn.Module, best: dict | None, optimizer, scheduler,
         order_state: torch.Tensor, loop: dict[str, Any],
         ema: torch.nn.Module | None = None) -> None:
    """Write the state after an epoch, or after a batch inside one (`loop["mid_epoch"]`: the
    batches done and the epoch's sums so far; `order_state` is then the batch order's
    generator from before that epoch drew its order, so the resumed run draws it again).
    `loop` is the JSON part (epoch, stage, history, ...); `ema` the average of the weights
    (imclass.training.weight_average), when the run keeps one."""
    opt_tensors, opt_plain = split_optimizer(optimizer.state_dict())
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors |= {f"best.{k}": v.detach().cpu().contiguous() for k, v in (best or {}).items()}
    tensors |= {f"ema.{k}": v.detach().cpu().contiguous()
                for k, v in (ema.state_dict() if ema is not None else {}).items()}
    tensors |= opt_tensors
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.order"] = order_state
    pending = folder / f"{STATE}.next.safetensors"  # the old tensors stay until the JSON is new
    atomic_write(pending, lambda tmp: save_file(tensors, str(tmp)))
    np_state = np.random.get_state()
    py_state = random.getstate()
    plain = {**loop, "optimizer": opt_plain, "scheduler": scheduler.state_dict(),
             "rng_numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
             "rng_python": [py_state[0], list(py_state[1]), py_state[2]],
             "tensors_sha256": _sha256(pending)}
    atomic_write_text(folder / f"{STATE}.json", json.dumps(plain))
    os.replace(pending, folder / f"{STATE}.safetensors")


def load(folder: Path) -> dict:
    """The saved state: {"loop": JSON part, "model", "best", "ema", "optimizer", "rng_*"}."""
    weights, sidecar = folder / f"{STATE}.safetensors", folder / f"{STATE}.json"
    pending = folder / f"{STATE}.next.safetensors"
    for p in (weights if not pending.is_file() else pending, sidecar):
        if not p.is_file():
            raise DataError(f"{p} is missing: the run saved no training state to resume "
                            "from (it was written by an older imclass, or stopped before its "
                            "first epoch ended)")
    try:
        plain = json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{sidecar} is not valid JSON; the state cannot be resumed") from None
    matches = weights.is_file() and plain.get("tensors_sha256") == _sha256(weights)
    if not matches and pending.is_file() and plain.get("tensors_sha256") == _sha256(pending):
        os.replace(pending, weights)  # killed after the JSON was written, before the rename
        matches = True
    if not matches:
        raise DataError(f"{weights} does not match the checksum in {sidecar}; the state is "
                        "damaged")
    tensors = load_file(str(weights))

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    return {"loop": plain, "model": part("model."), "best": part("best.") or None,
            "ema": part("ema.") or None,
            "optimizer": join_optimizer(tensors, plain["optimizer"]),
            "rng_torch": tensors["rng.torch"], "rng_order": tensors["rng.order"]}


def load_optimizer(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """`optimizer.load_state_dict(state)`, each buffer then laid out in memory as its
    parameter is. The state is saved contiguous, so a channels-last convolution's momentum
    came back in NCHW order, and a fused optimizer (one kernel over raw memory, imclass's on
    CPU and GPU) then paired each weight with another weight's momentum: a resumed run went
    its own way from its first step."""
    optimizer.load_state_dict(state)
    for param, buffers in optimizer.state.items():
        for name, value in buffers.items():
            if (isinstance(value, torch.Tensor) and value.shape == param.shape
                    and value.stride() != param.stride()):
                buffers[name] = torch.empty_like(param).copy_(value)


def restore_generators(state: dict, order: torch.Generator) -> None:
    torch.set_rng_state(state["rng_torch"])
    order.set_state(state["rng_order"])
    kind, keys, *rest = state["loop"]["rng_numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    version, internal, gauss = state["loop"]["rng_python"]
    random.setstate((version, tuple(internal), gauss))
