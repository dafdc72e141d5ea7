"""Sharing the CPU with other processes: a training run uses as many threads as there are
cores left free by everything else running, re-checked every few seconds.

Why: PyTorch's CPU kernels run on OpenMP (libgomp), whose threads spin at each barrier
waiting for the others. Two runs with 2 threads each on 2 cores leave each thread waiting for
a partner the scheduler has just put aside: measured on 2 cores (EfficientNet-Lite0 at 96 px,
batch 32, one training step), 410 ms alone and 1,700 ms each with a second run beside it
(24% of its speed alone, not 50%); whole default runs of a 300-image folder took 12 min 22 s
side by side against 1 min 36 s alone. With one thread each the two steps took 600-670 ms
(64%). `OMP_WAIT_POLICY=PASSIVE` got the same when shared but cost 15% alone (468 against
407 ms), so instead of giving up spinning, the run gives up threads only while others need
the cores (bench/sharing.py, docs/benchmarks.md).

How: every CHECK_SECONDS the busy time of all cores (/proc/stat) less this process's own CPU
time is what the others used; the threads are the cores that leaves, at least one, at most
what the run started with (torch's choice: the usable cores). Linux only; elsewhere a no-op.
A user who sets OMP_NUM_THREADS keeps that many threads throughout: the sums of a step depend
on how they are split, so only a fixed count gives bitwise the same run twice.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch

CHECK_SECONDS = 2.0  # between measurements: long enough to average over a few steps
# Cores the others use below which one counts as free: a shell, a browser tab or the kernel's
# own work take a few percent of a core and must not halve a run's threads.
SPARE_CORE = 0.3
PROC_STAT = Path("/proc/stat")


def busy_cpu_seconds() -> float | None:
    """Seconds all cores have spent busy since boot (user, nice, system, irq, softirq; not
    the hypervisor's steal, which fewer threads cannot avoid); None where /proc/stat cannot be
    read."""
    try:
        fields = PROC_STAT.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 5:
        return None
    ticks = [int(v) for v in fields[1:8]] + [0] * 7
    user, nice, system, _idle, _iowait, irq, softirq = ticks[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_for(others_cores: float, most: int) -> int:
    """Threads to run with when other processes keep `others_cores` cores busy."""
    free = usable_cores() - others_cores
    return max(1, min(most, math.floor(free + SPARE_CORE)))


class CoreShare:
    """A training-loop callback (imclass.training's events) that sets torch's thread count to
    the cores other processes leave free. `clock`, `busy` and `own` are the timers, so a
    test can fake them."""

    def __init__(self, log=None, clock=time.monotonic, busy=busy_cpu_seconds,
                 own=time.process_time):
        # a thread count the user chose is kept (see above): nothing to adjust then
        self.most = 1 if os.environ.get("OMP_NUM_THREADS") else torch.get_num_threads()
        self.clock, self.busy, self.own, self.log = clock, busy, own, log
        self.threads = self.most
        self.last = self._sample()
        self.changes: list[tuple[float, int]] = []  # (others' cores, threads) at each change

    def _sample(self) -> tuple[float, float, float] | None:
        busy = self.busy()
        return None if busy is None else (self.clock(), busy, self.own())

    def __call__(self, event: str, info: dict):
        if event not in ("batch_end", "epoch_end") or self.last is None or self.most < 2:
            return None
        if self.clock() - self.last[0] < CHECK_SECONDS:
            return None
        now = self._sample()
        if now is None:
            return None
        wall, busy, own = (b - a for a, b in zip(self.last, now))
        self.last = now
        others = max(0.0, (busy - own) / wall)
        threads = threads_for(others, self.most)
        if threads != self.threads:
            torch.set_num_threads(threads)
            self.threads = threads
            self.changes.append((round(others, 2), threads))
            if self.log is not None and len(self.changes) == 1:
                self.log(f"other processes are using {others:.1f} of the "
                         f"{usable_cores()} cores: training on {threads} thread(s) while "
                         "they do")
        return None
