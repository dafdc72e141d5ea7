"""Where the arithmetic runs: the device chosen for `--device`, mixed precision on it, and a
name for the hardware that run.json and the console can show."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from pathlib import Path

import torch

from imclass.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is visible; use "
                          "--device cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@functools.cache  # asked once per training step; the CPU does not change within a process
def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware, so that oneDNN's bf16 convolutions and
    matmuls beat fp32: AMX tile units (Intel Xeon 4th generation, Sapphire Rapids, and later)
    or the AVX512-BF16 dot-product instructions (AMD Zen 4 and later, Intel Cooper Lake).
    Measured, 2 threads (docs/benchmarks.md): with AMX a 4096x4096 matmul ran at 1,388
    GFLOP/s in bf16 against 225 in fp32 and the default CNN's training step 1.6x faster under
    bf16 autocast; with AVX512-BF16 (an AMD EPYC) 382 against 183, the step 1.9x faster.
    Without either, bf16 is emulated and slower than fp32 (31 GFLOP/s on an Intel Xeon whose
    virtual machine hid both)."""
    probes = (getattr(torch.cpu, "_is_amx_tile_supported", None),
              getattr(torch.cpu, "_is_avx512_bf16_supported", None))
    return any(bool(probe and probe()) for probe in probes)


def mixed_precision(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype of `precision` (auto, bf16 or fp32) on `device`; None: full fp32.
    auto: bf16 on a CUDA GPU (no loss scaling needed, unlike fp16) and on a CPU that multiplies
    bf16 natively (AMX or AVX512-BF16)."""
    if precision == "fp32":
        return None
    if precision == "bf16" or device.type == "cuda" or (device.type == "cpu" and native_bf16()):
        return torch.bfloat16
    return None


def autocast(device: torch.device, precision: str | None = None):
    """Mixed precision for a forward pass: `precision` as in mixed_precision; None (what
    evaluation and prediction use) is bf16 on CUDA and full fp32 on a CPU, so that a report's
    figures are those the exported fp32 model gives."""
    if precision is None:
        precision = "auto" if device.type == "cuda" else "fp32"
    dtype = mixed_precision(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    # no cast weights kept between calls: a forward casts each weight once anyway, and CUDA
    # graphs (imclass.cuda_graphs) record only with the cache off
    return torch.autocast(device.type, dtype=dtype, cache_enabled=False)


def precision_name(device: torch.device, precision: str) -> str:
    """For the console and run.json: 'bf16 mixed precision' or 'fp32'."""
    return "bf16 mixed precision" if mixed_precision(device, precision) else "fp32"


def tune_backend(device: torch.device) -> None:
    """cuDNN autotuning on a GPU: each convolution's fastest algorithm, measured once per
    input shape (our batches keep one shape, but for the last one)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def compiled(model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """`torch.compile(model)` for the training steps when `enabled`, else the model. The
    weights stay the model's own (checkpoints and validation use it uncompiled). A graph
    inductor cannot build runs eagerly instead of failing the run (dynamo's suppress_errors:
    PyTorch logs a warning naming what failed)."""
    if not enabled:
        return model
    import torch._dynamo
    import torch._inductor.config
    torch._dynamo.config.suppress_errors = True
    # dropout drawn from torch's own generator, not inductor's: the same seed then gives
    # the same masks compiled or not (measured: without it, 2 steps of our CNN moved the
    # first layer's weights 5% apart)
    torch._inductor.config.fallback_random = True
    return torch.compile(model)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} CPU, {torch.get_num_threads()} threads"


KEEP_FREED_MIN_MEMORY = 16 * 1024 ** 3  # bytes of RAM below which the speed is not worth it


def physical_memory() -> int | None:
    """Bytes of RAM on this machine, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def keep_freed_memory(min_memory: int = KEEP_FREED_MIN_MEMORY) -> bool:
    """Ask glibc's allocator to serve every block from its heap and keep freed memory.

    By default each block over a threshold (at most 32 MiB) is a fresh mmap, returned to the
    kernel when freed: a 224-px batch of activations does that hundreds of times a step, and
    the kernel zeroes every new page. Measured on 2 cores (EfficientNet-Lite0, 224 px, batch
    32, side by side): 14.5 training images/s with 9.4 s of system time in 13.2 s, against
    26.6 images/s with 1.4 s after this call (bench/allocator.py, docs/benchmarks.md).
    Training reuses the same sizes every step, so the memory kept is mostly the memory needed
    next, but the peak grows (a whole 224-px run: 8.0 GB against 6.1 GB), so a machine with
    less than `min_memory` of RAM keeps glibc's default. Returns whether the allocator was changed (False also where there is no glibc)."""
    import ctypes
    import ctypes.util

    memory = physical_memory()
    if memory is None or memory < min_memory:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's malloc.h
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))


def release_freed_memory() -> None:
    """Hand the memory that glibc keeps after `keep_freed_memory` back to the system
    (malloc_trim), between stages that allocate blocks of other sizes: after training at a
    batch of 16, evaluation's batches of 64 did not fit the kept blocks and the heap grew by
    1.8 GB on top of them (EfficientNet-Lite0 at 224 px, 2026-12-04). No-op without glibc."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
