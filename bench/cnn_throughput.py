"""Training throughput (images/s) of CNN shapes on this machine: forward, backward and an SGD
step on a 256-image batch of 28x28 greyscale input, median of several timed repeats.

    .venv/bin/python bench/cnn_throughput.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from imclass.config import ModelConfig
from imclass.models import build_model, flops_per_image

SHAPES = [((32, 64, 128), (1, 1, 1)), ((32, 64, 128), (2, 2, 2)), ((16, 32, 64, 128), (1, 2, 2, 1)),
          ((24, 48, 96, 192), (1, 1, 2, 1)), ((32, 64, 128, 256), (1, 1, 1, 1))]


def images_per_second(widths, depths, batch: int, steps: int, repeats: int) -> tuple[float, float]:
    model = build_model(ModelConfig(widths=widths, depths=depths), 1, 10)
    model = model.to(memory_format=torch.channels_last)
    flops = flops_per_image(model, (1, 28, 28))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    for _ in range(3):  # warm-up
        step()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(batch * steps / (time.perf_counter() - start))
    return flops, statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| widths | depths | MFLOPs/image | train images/s (median) |")
    print("|---|---|---|---|")
    for widths, depths in SHAPES:
        flops, rate = images_per_second(widths, depths, 256, args.steps, args.repeats)
        print(f"| {','.join(map(str, widths))} | {','.join(map(str, depths))} | "
              f"{flops / 1e6:.1f} | {rate:.0f} |", flush=True)


if __name__ == "__main__":
    main()
