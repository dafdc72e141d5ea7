"""`--precision auto` on a CPU, by measurement: bf16 where it trains this model faster.

A CPU that multiplies bf16 natively (AMX, AVX512-BF16) is not faster for every network:
measured on a Xeon with AMX (2026-12-04), our CNN trained 1.6-1.9x faster under bf16 autocast,
but EfficientNet-Lite0 at 96 px 1.45x slower (467 against 322 ms a step: its depthwise
convolutions are bound by memory, and autocast adds casts around them). So on such a CPU a
few training steps of the run's own model on its own image shape and batch (up to 8 images at
224 px) are timed in each precision (one to three seconds), and the faster one is kept, cached per (CPU, its flags, architecture, input
shape, batch, torch version) in ~/.cache/imclass/precision.json so the next run of the same
kind pays nothing. Without native bf16, fp32 (emulated bf16 is always slower); on a GPU,
bf16.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from imclass.atomic import atomic_write_text
from imclass.devices import cpu_name, native_bf16
from imclass.finetune import train_mode

TIMED_STEPS = 2  # per precision, after one untimed step each
# Pixels of a probe step: the run's batch, up to 8 images at 224 px (a step of about 0.35 s
# for EfficientNet-Lite0 on 2 cores); small images keep their whole batch, where casts and
# per-kernel overheads weigh most.
PROBE_PIXELS = 8 * 224 * 224
MARGIN = 1.1  # bf16 must be this much faster: within it, fp32 (exact, and what is exported)


def cache_path() -> Path:
    root = os.environ.get("IMCLASS_CACHE_DIR") or Path.home() / ".cache" / "imclass"
    return Path(root) / "precision.json"


def cpu_key() -> str:
    """The CPU's model and instruction-set flags, hashed (a VM may hide AMX on the same model)."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line
                break
    except OSError:
        pass
    return f"{cpu_name()} {hashlib.sha256(flags.encode()).hexdigest()[:12]}"


def probe_key(architecture: str, shape: tuple[int, ...], batch: int) -> str:
    return (f"{cpu_key()} | {architecture} | {'x'.join(map(str, shape))} | batch {batch} | "
            f"torch {torch.__version__}")


def probe_batch(shape: tuple[int, ...], batch: int) -> int:
    return max(1, min(batch, PROBE_PIXELS // (shape[-1] * shape[-2])))


def step_seconds(model: nn.Module, shape: tuple[int, ...], outputs: int,
                 dtype: torch.dtype | None, batch: int = 8,
                 clock: Callable[[], float] = time.perf_counter,
                 device: torch.device = torch.device("cpu"), untimed: int = 1,
                 timed: int = TIMED_STEPS) -> float:
    """Median seconds of a forward + backward pass of `model` on `batch` random images,
    `timed` passes after `untimed` ones. The random images and the model's dropout draw from
    a forked generator: a run probed (its first on this machine) and a run whose precision
    was cached must draw the same augmentation from the same seed."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        x = torch.randn(batch, *shape, device=device).contiguous(
            memory_format=torch.channels_last)
        target = torch.randint(0, max(1, outputs), (batch,), device=device)
        times = []
        for step in range(untimed + timed):
            start = clock()
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(x)
            loss = nn.functional.cross_entropy(logits.float()[:, :max(1, outputs)], target)
            loss.backward()
            model.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if step >= untimed:
                times.append(clock() - start)
    return sorted(times)[len(times) // 2]


def measure(model: nn.Module, architecture: str, shape: tuple[int, ...], batch: int,
            outputs: int, timer=step_seconds) -> dict:
    """Seconds of a training step in fp32 and bf16 on a probe batch (`images` of them),
    measured now and remembered for `choose_cpu_precision` (a budget run measures afresh: a
    figure cached while the machine was busy would mislead its plan)."""
    probe = copy.deepcopy(model)  # BatchNorm statistics of the run stay untouched
    train_mode(probe)  # as the run trains it: BatchNorms marked frozen stay so
    n = probe_batch(shape, batch)
    m = {"fp32_s": timer(probe, shape, outputs, None, n),
         "bf16_s": timer(probe, shape, outputs, torch.bfloat16, n)}
    _remember(probe_key(architecture, shape, batch), m)
    return m | {"images": n}


def _known() -> dict:
    try:
        return json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _remember(key: str, m: dict) -> None:
    known = _known()
    known[key] = {"fp32_s": m["fp32_s"], "bf16_s": m["bf16_s"]}
    try:
        atomic_write_text(cache_path(), json.dumps(known, indent=1, sort_keys=True))
    except OSError:
        pass  # an unwritable home: measured again next time


def faster(m: dict) -> tuple[str, str]:
    """("bf16" or "fp32", why) from a measurement's step times."""
    ratio = m["fp32_s"] / m["bf16_s"]
    choice = "bf16" if ratio >= MARGIN else "fp32"
    return choice, f"measured: bf16 {ratio:.2f}x the speed of fp32 for this model"


def choose_cpu_precision(model: nn.Module, architecture: str, shape: tuple[int, ...],
                         batch: int, outputs: int, timer=step_seconds) -> tuple[str, str]:
    """("bf16" or "fp32", why) for training `model` on images of `shape` on this CPU."""
    if not native_bf16():
        return "fp32", "this CPU has no native bf16"
    m = _known().get(probe_key(architecture, shape, batch))
    if m is None:
        m = measure(model, architecture, shape, batch, outputs, timer)
    return faster(m)
