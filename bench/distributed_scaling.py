"""Data-parallel scaling on this machine: the same `imclass train` with 1 process and with
`--nproc N`, side by side in one sitting; training images/s (median over the epochs after the
first) and the wall time of the whole run.

    .venv/bin/python bench/distributed_scaling.py [--nproc 2] [--subset 12000] [--epochs 4]

Prints the matmul speed first (the machine's speed varies by up to 2x from day to day). One
process uses every core (torch's threads); N processes get cores/N threads each, as torchrun
gives them, so the comparison is the same cores used two ways.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.own_images import matmul_gflops  # noqa: E402


def run(nproc: int, args) -> dict:
    out = Path(tempfile.mkdtemp()) / f"p{nproc}"
    cmd = [sys.executable, "-m", "imclass", "train", "--subset", str(args.subset), "--epochs",
           str(args.epochs), "--quiet", "--out", str(out)]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.perf_counter() - start
    with (out / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    speeds = [float(r["images_per_s"]) for r in rows[1:]] or [float(rows[0]["images_per_s"])]
    return {"nproc": nproc, "images_per_s": statistics.median(speeds), "wall_s": wall,
            "val_acc": float(rows[-1]["val_acc"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--subset", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    print(f"{date.today()}: matmul {matmul_gflops():.0f} GFLOP/s (4096x4096 fp32), "
          f"{os.cpu_count()} cores; imclass train --subset {args.subset} --epochs {args.epochs}")
    results = [run(1, args), run(args.nproc, args)]
    base = results[0]["images_per_s"]
    print("processes  train images/s  speed-up  wall s  last val acc")
    for r in results:
        print(f"{r['nproc']:9d}  {r['images_per_s']:14.0f}  {r['images_per_s'] / base:7.2f}x"
              f"  {r['wall_s']:6.0f}  {r['val_acc']:.4f}")


if __name__ == "__main__":
    main()
