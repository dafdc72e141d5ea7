"""Long runs: resident memory and open file descriptors of an `imclass train` process sampled
at the end of each of 50 short epochs. Both must be flat after warm-up: a leak of a few MB or
one descriptor per epoch kills a multi-day run.

    .venv/bin/python bench/long_run.py [--epochs 50] [--subset 3000] [--data FOLDER]

The run saves its resume state every epoch and (with --checkpoint-minutes) inside epochs too,
so every file written over a run is exercised. Prints the matmul speed first (the machine's
speed varies by up to 2x from day to day), then per-epoch samples and a summary: the change
from epoch 10 (warm) to the last epoch, and the slope fitted over those epochs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.own_images import matmul_gflops  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
WARM_EPOCHS = 10  # allocator pools, lazy imports and the first checkpoints settle by then


def sample(pid: int) -> tuple[float, int]:
    """(resident MiB, open file descriptors) of a live process."""
    with open(f"/proc/{pid}/statm") as fh:
        rss = int(fh.read().split()[1]) * PAGE / 2**20
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def epochs_done(history: Path) -> int:
    try:
        return max(0, len(history.read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--subset", type=int, default=3000)
    parser.add_argument("--data", help="a folder dataset instead of Fashion-MNIST")
    args = parser.parse_args()
    print(f"{date.today()}: matmul {matmul_gflops():.0f} GFLOP/s (4096x4096 fp32), "
          f"{os.cpu_count()} cores")
    out = Path(tempfile.mkdtemp()) / "long"
    data = ["--data", args.data, "--model", "cnn"] if args.data else ["--subset",
                                                                     str(args.subset)]
    cmd = [sys.executable, "-m", "imclass", "train", *data, "--epochs", str(args.epochs),
           "--patience", "none", "--checkpoint-minutes", "0.005", "--quiet", "--out", str(out)]
    print("command:", " ".join(cmd[1:]))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[int, float, int]] = []
    start = time.perf_counter()
    while proc.poll() is None:
        done = epochs_done(out / "history.csv")
        if done > len(samples):
            try:
                samples.append((done, *sample(proc.pid)))
            except FileNotFoundError:  # it ended between the two reads
                break
        time.sleep(0.02)
    if proc.wait() != 0:
        sys.exit(f"the run failed: {proc.stderr.read()[-2000:]}")
    print(f"{len(samples)} epochs sampled in {time.perf_counter() - start:.0f} s")
    print("epoch  RSS MiB  open fds")
    for epoch, rss, fds in samples:
        if epoch <= WARM_EPOCHS or epoch % 5 == 0 or epoch == samples[-1][0]:
            print(f"{epoch:5d}  {rss:7.1f}  {fds:8d}")
    warm = [s for s in samples if s[0] >= WARM_EPOCHS]
    epochs = np.array([s[0] for s in warm], dtype=float)
    rss, fds = np.array([s[1] for s in warm]), np.array([s[2] for s in warm])
    rss_slope = np.polyfit(epochs, rss, 1)[0]
    print(f"after warm-up (epoch {WARM_EPOCHS} to {int(epochs[-1])}): RSS {rss[0]:.1f} -> "
          f"{rss[-1]:.1f} MiB (max {rss.max():.1f}), fitted slope {rss_slope * 1024:+.0f} "
          f"KiB/epoch; open fds {fds.min()}..{fds.max()}")


if __name__ == "__main__":
    main()
