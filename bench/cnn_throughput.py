"""Training throughput (images/s) of our CNNs' shapes on this machine: forward, backward and an SGD
step on a 256-image batch of 28x28 greyscale input, median of several timed repeats; as
GFLOP/s (forward + backward counted as 3x the forward FLOPs) and as a share of a 4096x4096
fp32 matmul (median of 5) timed in the same process right after each row. With --compile,
each shape also under torch.compile (inductor; its compile time is left out of the rate).
With --precision bf16, each step under bf16 autocast (imclass's --precision bf16), its share
taken of a bf16 matmul; both: fp32 and bf16 side by side.

    .venv/bin/python bench/cnn_throughput.py [--repeats 5] [--compile] [--default-only]
        [--long-only] [--precision fp32|bf16|both]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.own_images import matmul_gflops  # noqa: E402
from imclass.config import ModelConfig  # noqa: E402
from imclass.devices import autocast  # noqa: E402
from imclass.models import build_model, flops_per_image  # noqa: E402

SHAPES = [("cnn", (32, 64, 128), (1, 1, 1)), ("cnn", (32, 64, 128), (2, 2, 2)),
          ("cnn", (16, 32, 64, 128), (1, 2, 2, 1)), ("cnn", (24, 48, 96, 192), (1, 1, 2, 1)),
          ("cnn", (32, 64, 128, 256), (1, 1, 1, 1)),
          ("rescnn", (32, 64, 128, 256), (0, 1, 0, 1))]  # the last: the long recipe's
DEFAULT, LONG = SHAPES[2], SHAPES[-1]


def images_per_second(name, widths, depths, batch: int, steps: int, repeats: int,
                      compile_it: bool = False, precision: str = "fp32") -> tuple[float, float]:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, widths=widths, depths=depths), 1, 10)
    model = model.to(memory_format=torch.channels_last)
    flops = flops_per_image(model, (1, 28, 28))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    net = torch.compile(model) if compile_it else model
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad()
        with autocast(torch.device("cpu"), precision):
            loss = F.cross_entropy(net(x).float(), y)
        loss.backward()
        opt.step()
    for _ in range(3):  # warm-up (and compilation)
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
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--default-only", action="store_true", help="only the default model")
    parser.add_argument("--long-only", action="store_true",
                        help="only the long recipe's model (rescnn)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "both"), default="fp32")
    args = parser.parse_args()
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    matmul = {p: matmul_gflops(dtype=torch.bfloat16 if p == "bf16" else None)
              for p in precisions}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; matmul "
          + ", ".join(f"{p} {g:.0f} GFLOP/s" for p, g in matmul.items()) + "\n")
    modes = [(c, p) for c in ([False, True] if args.compile else [False]) for p in precisions]
    print("| model | widths | depths | MFLOPs/image | mode | train images/s (median) | "
          "GFLOP/s | matmul GFLOP/s (just after) | share of matmul |\n"
          "|---|---|---|---:|---|---:|---:|---:|---:|")
    shapes = ([DEFAULT] if args.default_only else []) + ([LONG] if args.long_only else [])
    for name, widths, depths in shapes or SHAPES:
        for compile_it, precision in modes:
            flops, rate = images_per_second(name, widths, depths, 256, args.steps,
                                            args.repeats, compile_it, precision)
            # the share is of a matmul timed right after the row: the machine's speed drifts
            reference = matmul_gflops(dtype=torch.bfloat16 if precision == "bf16" else None)
            gflops = 3 * flops * rate / 1e9
            mode = f"{'compiled' if compile_it else 'eager'} {precision}"
            print(f"| {name} | {','.join(map(str, widths))} | {','.join(map(str, depths))} | "
                  f"{flops / 1e6:.1f} | {mode} | {rate:.0f} | "
                  f"{gflops:.0f} | {reference:.0f} | {gflops / reference:.0%} |", flush=True)
    print(f"\nfp32 matmul after: {matmul_gflops():.0f} GFLOP/s")


if __name__ == "__main__":
    main()
