"""Drawing a report's figures on two cores: matplotlib draws in one thread, so while this
process draws some figures a forked copy of it draws the others.

Measured on 2 cores (a Xeon with AMX, 2026-12-07, medians of 3 side by side): the test figures
of the 30-per-class folder of bench/own_images.py took 5.1 s one after another and 3.7 s in two
processes, those of its 300 photos 4.1 and 2.7 s. A forked child has this process's memory
(the test set, the arrays the figures show) without copying or pickling it; it runs torch ops
on one thread, as DataLoader's forked workers do, since an OpenMP pool does not survive fork.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from typing import Callable

Job = Callable[[], object]


def can_fork() -> bool:
    """Where a forked copy is cheap and safe: Linux (macOS's system libraries are not
    fork-safe; Windows has no fork), with a second core this process may use, and no CUDA
    context (a forked child cannot use the parent's GPU, where a run's images may live)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import torch
    except ImportError:
        return (os.cpu_count() or 1) >= 2
    # imclass.cores gives a run on a shared machine fewer threads
    return torch.get_num_threads() >= 2 and not torch.cuda.is_initialized()


def run_side_by_side(elsewhere: list[Job], here: list[Job], timeout_s: float = 600.0) -> None:
    """Run `elsewhere` in a forked child while this process runs `here`; one after the other
    where forking does not pay (see can_fork). Should the child fail, or not end within
    `timeout_s` after `here` did (it is then killed), its jobs run again here: a job's own
    error is raised as itself, and a child stuck in a library's lock costs time, not figures."""
    if not elsewhere or not can_fork():
        for job in [*elsewhere, *here]:
            job()
        return
    for stream in (sys.stdout, sys.stderr):  # else the child would write them out again
        stream.flush()
    child = multiprocessing.get_context("fork").Process(target=_run_alone, args=(elsewhere,),
                                                        daemon=True)
    child.start()
    try:
        for job in here:
            job()
    finally:
        child.join(timeout_s)
        if child.is_alive():
            child.kill()
            child.join()
    if child.exitcode != 0:
        for job in elsewhere:
            job()


def _run_alone(jobs: list[Job]) -> None:
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    for job in jobs:
        job()
