"""Two imclass trainings on one machine: each run's speed beside another against its speed
alone (issue 29: each at >= 40% of its speed alone; 50% is a fair share of the cores).

    .venv/bin/python bench/sharing.py [--data /tmp/own/data/fmnist-300] [--flags '...']
                                      [--runs 1] [--shared-only]

A default run of the folder alone, then two started together, then (for comparison) two
together with `OMP_NUM_THREADS` set to the cores, which turns imclass's thread sharing off
(imclass.cores). Printed: each process's wall time and its training images/s (from
history.csv: the last stage's images over its seconds).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from own_images import matmul_gflops  # noqa: E402


def start(data: str, out: Path, flags: list[str], env: dict) -> tuple[subprocess.Popen, float]:
    command = [sys.executable, "-m", "imclass", "train", "--data", data, "--out", str(out),
               "--overwrite", "--quiet", *flags]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL), time.perf_counter()


def training_speed(out: Path) -> float:
    """Training images per second through the network: the last stage's epochs (a head on
    cached features runs at thousands a second and says nothing of the cores)."""
    with (out / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    last = max(r["stage"] for r in rows)
    rows = [r for r in rows if r["stage"] == last]
    images = sum(float(r["images_per_s"]) * float(r["seconds"]) for r in rows)
    return images / sum(float(r["seconds"]) for r in rows)


def together(data: str, work: Path, flags: list[str], env: dict, tag: str) -> list[tuple]:
    procs = [start(data, work / f"{tag}-{k}", flags, env) for k in range(2)]
    result = []
    for k, (proc, began) in enumerate(procs):
        proc.wait()
        if proc.returncode:
            raise SystemExit(f"run {tag}-{k} failed ({proc.returncode})")
        result.append((time.perf_counter() - began, training_speed(work / f"{tag}-{k}")))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/tmp/own/data/fmnist-300")
    parser.add_argument("--flags", default="", help="flags for every run")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--work", default="runs/bench-sharing")
    parser.add_argument("--shared-only", action="store_true",
                        help="skip the two runs without sharing (the behaviour before issue "
                             "29: 6-10x slower than alone, so the longest part by far)")
    args = parser.parse_args()
    from imclass.devices import cpu_name
    print(f"{cpu_name()}, {os.cpu_count()} cores, matmul {matmul_gflops():.0f} GFLOP/s")
    work, flags = Path(args.work), args.flags.split()
    plain = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    fixed = {**plain, "OMP_NUM_THREADS": str(os.cpu_count())}
    print("| case | run | wall time (s) | training images/s | share of alone |")
    print("|---|---|---|---|---|")
    for r in range(args.runs):
        proc, began = start(args.data, work / "alone", flags, plain)
        proc.wait()
        alone = (time.perf_counter() - began, training_speed(work / "alone"))
        print(f"| alone | {r} | {alone[0]:.0f} | {alone[1]:.1f} | 100% |", flush=True)
        cases = [("two, imclass sharing the cores", plain),
                 ("two, OMP_NUM_THREADS fixed (no sharing)", fixed)]
        for tag, env in cases[:1] if args.shared_only else cases:
            runs = together(args.data, work, flags, env, tag.split(",")[1].split()[0])
            for k, (wall, speed) in enumerate(runs):
                print(f"| {tag} | {r}.{k} | {wall:.0f} | {speed:.1f} | "
                      f"{speed / alone[1]:.0%} |", flush=True)
            print(f"| {tag}, median | | {statistics.median(w for w, _ in runs):.0f} | | "
                  f"{statistics.median(s for _, s in runs) / alone[1]:.0%} |", flush=True)


if __name__ == "__main__":
    main()
