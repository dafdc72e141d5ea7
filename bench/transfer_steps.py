"""What a pretrained network's training step gets out of this CPU: images/s and GFLOP/s of the
frozen backbone's forward pass (what the feature cache pays, once per view), of fine-tuning
the top three layer groups (the transfer recipe) and of fine-tuning the whole network, against
the same process's fp32 matmul.

    .venv/bin/python bench/transfer_steps.py [--models efficientnet_lite0:96,efficientnet_lite0:224,resnet50:224]
                                             [--batch 32] [--steps 3] [--compile]

Random weights (the speed does not depend on them), channels-last, fp32, glibc keeping freed
memory as a training run does (imclass.devices.keep_freed_memory). GFLOP/s count a forward
pass as the network's FLOPs and a whole training step as 3x them (forward, and a backward
pass of twice its cost); the top-three step's FLOPs are not counted (its backward pass stops
part way down).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from own_images import matmul_gflops  # noqa: E402

from imclass.config import ModelConfig  # noqa: E402
from imclass.devices import cpu_name, keep_freed_memory  # noqa: E402
from imclass.finetune import layer_groups  # noqa: E402
from imclass.models import build_model, flops_per_image  # noqa: E402


def seconds(step, steps: int) -> float:
    step()  # untimed: the allocator and oneDNN's kernels settle
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name: str, side: int, batch: int, steps: int, compile_: bool) -> list[tuple]:
    model = build_model(ModelConfig(name=name), 3, 10).to(memory_format=torch.channels_last)
    flops = flops_per_image(model, (3, side, side))
    x = torch.randn(batch, 3, side, side).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    groups = layer_groups(model)
    net = torch.compile(model) if compile_ else model

    def forward():
        model.eval()
        with torch.no_grad():
            net(x)

    def train(top: int | None):
        trainable = {id(p) for g in (groups if top is None else groups[-1 - top:]) for p in g}
        for p in model.parameters():
            p.requires_grad_(id(p) in trainable)

        def step():
            model.train()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            model.zero_grad(set_to_none=True)
        return step
    rows = []
    for what, step, factor in (("frozen backbone, forward", forward, 1),
                               ("fine-tune top 3 groups", train(3), None),
                               ("fine-tune everything", train(None), 3)):
        s = seconds(step, steps)
        gflops = f"{batch * flops * factor / s / 1e9:.0f}" if factor else ""
        rows.append((f"{name} {side} px", what, f"{batch / s:.1f}", gflops))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="efficientnet_lite0:96,efficientnet_lite0:224,"
                                            "resnet50:224")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    args = parser.parse_args()
    keep_freed_memory()
    matmul = matmul_gflops()
    print(f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}; matmul {matmul:.0f} GFLOP/s (fp32); batch {args.batch}"
          f"{', compiled' if args.compile else ''}")
    print("| network | step | images/s | GFLOP/s | share of matmul |")
    print("|---|---|---|---|---|")
    for spec in args.models.split(","):
        name, side = spec.split(":")
        for net, what, rate, gflops in measure(name, int(side), args.batch, args.steps,
                                               args.compile):
            share = f"{float(gflops) / matmul:.0%}" if gflops else ""
            print(f"| {net} | {what} | {rate} | {gflops} | {share} |", flush=True)


if __name__ == "__main__":
    main()
