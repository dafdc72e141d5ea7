"""Augmentation alone, ms per batch (median of 30 after 3): the `fashion` and `light` presets
on 256 Fashion-MNIST-sized images and `photo` on 32 images decoded at 256 px and cropped to
224, on this machine's CPU (2 threads) or a GPU.

    .venv/bin/python bench/augment_speed.py [--tree PATH] [--device cuda]

--tree takes imclass from another checkout (a `git worktree` of an older commit), to compare
side by side: run the two alternately, A B A B, in one sitting.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

CASES = [("fashion", (1, 28, 28), None, 256), ("light", (1, 28, 28), None, 256),
         ("photo", (3, 256, 256), 224, 32)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree.resolve()))
    import torch

    from imclass.data.augment import PRESETS, build_augment
    from imclass.devices import cpu_name
    torch.set_num_threads(min(2, torch.get_num_threads()))
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.own_images import matmul_gflops
    print(f"{cpu_name()}, fp32 matmul {matmul_gflops():.0f} GFLOP/s, torch {torch.__version__}")
    for preset, shape, out, n in CASES:
        augment = build_augment(PRESETS[preset], shape, out)
        x = torch.rand(n, *shape, device=args.device)
        times = []
        for i in range(33):
            if args.device != "cpu":
                torch.cuda.synchronize()
            start = time.perf_counter()
            augment(x)
            if args.device != "cpu":
                torch.cuda.synchronize()
            if i >= 3:
                times.append(time.perf_counter() - start)
        print(f"{args.tree.name}: {preset}, batch {n}: {statistics.median(times) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
