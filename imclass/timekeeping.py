"""Keeping a run to its time budget (`--budget`): when the process started, when training must
end, and a learning-rate schedule that follows the clock; and how often a run's files are
written while it trains (Pace).

A schedule counted in steps assumes the machine keeps the speed it was measured at. A shared
machine does not (a second run, a notebook, `tune` workers): measured on 2 cores, one
training's steps took 4x as long while another ran beside it. So a budget run's last stage
takes its learning rate from its progress, the larger of the share of its steps done and the
share of its time used: when the machine slows down the schedule moves on with the clock,
anneals, and training ends on time with fewer steps; when it runs as measured, the two agree.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Callable

Clock = Callable[[], float]  # seconds, monotonic


# The most of the training time that writing the run's files at epoch ends may take (the
# resume state, the best and last weights): a file is written again once the training since
# its last write took WRITE_SHARE^-1 times as long as that write. Lite0's resume state (54 MB:
# weights, their average, AdamW's two buffers) takes 0.14 s to write and checksum, its weights
# 0.05 s, and 300 images' epochs 0.7-1.8 s: written after each of the 15 epochs they were 2.8 s
# of a 48 s run (6%); paced, every fifth epoch or so (an Intel Xeon, 2026-12-07).
WRITE_SHARE = 0.02


class Pace:
    """Whether a file is due to be written again: at first, then once the time since its last
    write is 1/WRITE_SHARE times what that write took, or `most_s`, whichever is less."""

    def __init__(self, most_s: float = math.inf, clock: Clock | None = None):
        self.most_s, self.clock = most_s, clock or time.monotonic
        self.last, self.cost = self.clock(), 0.0

    def since_last(self) -> float:
        return self.clock() - self.last

    def due(self) -> bool:
        return self.since_last() >= min(self.cost / WRITE_SHARE, self.most_s)

    def timed(self, write: Callable[[], object]) -> None:
        start = self.clock()
        write()
        self.last = self.clock()
        self.cost = self.last - start


def process_age(clock: Clock = time.monotonic) -> float:
    """Seconds since this process started (interpreter start-up and imports included), from
    /proc on Linux; 0 elsewhere (the budget then counts from the call)."""
    try:
        fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22 of stat(5): start time, clock ticks since boot
        uptime = float(open("/proc/uptime").read().split()[0])
        return max(0.0, uptime - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


@dataclass(frozen=True)
class Budget:
    """A run's time budget: `seconds` from `origin` (a `clock` reading: the process start for
    `imclass train`, the call for a library call or a search's trial)."""
    seconds: float
    origin: float
    clock: Clock = time.monotonic

    def elapsed(self) -> float:
        return self.clock() - self.origin

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def deadline(self, reserve: float) -> "Deadline":
        """When training must end so that `reserve` seconds remain for what follows it."""
        return Deadline(self.origin + self.seconds - reserve, self.clock)


class Deadline:
    """When training must end: `end` on `clock`'s scale."""

    def __init__(self, end: float, clock: Clock = time.monotonic):
        self.end, self.clock = end, clock

    def left(self) -> float:
        return self.end - self.clock()

    def passed(self) -> bool:
        return self.clock() >= self.end


def _cos_between(start: float, end: float, share: float) -> float:
    """From `start` to `end` along half a cosine, as share goes 0 -> 1 (OneCycleLR's anneal)."""
    return end + (start - end) / 2 * (1 + math.cos(math.pi * min(1.0, max(0.0, share))))


# torch.optim.lr_scheduler.OneCycleLR's defaults, which the step-counted schedule uses
DIV_FACTOR, FINAL_DIV_FACTOR = 25.0, 1e4
MOMENTUM_LOW, MOMENTUM_HIGH = 0.85, 0.95


def schedule_factor(kind: str, progress: float, warmup: float) -> tuple[float, float | None]:
    """(the learning rate as a share of its peak, the momentum or None) at `progress` in
    [0, 1] of a stage: onecycle as OneCycleLR draws it (cosine warm-up from peak/25, cosine
    anneal to peak/250,000, momentum 0.95 -> 0.85 -> 0.95), cosine from the peak to 0, or
    constant."""
    if kind == "constant":
        return 1.0, None
    if kind == "cosine":
        return _cos_between(1.0, 0.0, progress), None
    start, final = 1 / DIV_FACTOR, 1 / DIV_FACTOR / FINAL_DIV_FACTOR
    if progress < warmup:
        share = progress / warmup
        return (_cos_between(start, 1.0, share),
                _cos_between(MOMENTUM_HIGH, MOMENTUM_LOW, share))
    share = (progress - warmup) / max(1e-9, 1 - warmup)
    return _cos_between(1.0, final, share), _cos_between(MOMENTUM_LOW, MOMENTUM_HIGH, share)


class TimedSchedule:
    """A per-step schedule over `total_steps` steps or `seconds`, whichever runs out first:
    its progress is max(steps done / total_steps, time used / seconds). `done` says when it
    has run out; training then stops. Used like a torch scheduler (`step()` after each
    optimiser step, `state_dict`), so a resumed run continues with the time it had left."""

    def __init__(self, optimizer, kind: str, warmup: float, total_steps: int, seconds: float,
                 clock: Clock = time.monotonic, agree: Callable[[float], float] = lambda x: x):
        self.optimizer, self.kind, self.warmup = optimizer, kind, warmup
        self.total_steps, self.seconds, self.clock = max(1, total_steps), max(1e-3, seconds), clock
        self.agree = agree  # several processes: one share of time for all (their mean)
        self.peaks = [g["lr"] for g in optimizer.param_groups]
        self.steps, self.used_before = 0, 0.0
        self.started = clock()
        self.progress = 0.0
        self._apply(0.0)

    def time_used(self) -> float:
        return self.used_before + self.clock() - self.started

    def _apply(self, progress: float) -> None:
        factor, momentum = schedule_factor(self.kind, progress, self.warmup)
        for group, peak in zip(self.optimizer.param_groups, self.peaks):
            group["lr"] = peak * factor
            if momentum is None:
                continue
            if group.get("momentum"):  # SGD with momentum, RMSprop: as OneCycleLR cycles it
                group["momentum"] = momentum
            elif "betas" in group:  # Adam(W): its first beta
                group["betas"] = (momentum, group["betas"][1])

    def step(self) -> None:
        self.steps += 1
        self.progress = min(1.0, max(self.steps / self.total_steps,
                                     self.agree(self.time_used() / self.seconds)))
        self._apply(self.progress)

    @property
    def done(self) -> bool:
        return self.progress >= 1.0

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"steps": self.steps, "time_used": self.time_used(), "progress": self.progress,
                "peaks": self.peaks, "seconds": self.seconds}

    def load_state_dict(self, state: dict) -> None:
        """Continues where the state left off, with the stage's own time: a resumed budget run
        trains for what its first process had left."""
        self.steps, self.progress, self.peaks = state["steps"], state["progress"], state["peaks"]
        self.seconds = state["seconds"]
        self.used_before, self.started = state["time_used"], self.clock()
        self._apply(self.progress)
