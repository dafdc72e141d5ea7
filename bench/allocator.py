"""Training a 224-px pretrained network on the CPU with and without `keep_freed_memory()`
(glibc's allocator told to keep freed memory instead of a fresh mmap per large block), side by
side: each repeat runs both, alternating, each in a fresh process.

    .venv/bin/python bench/allocator.py [--repeats 3] [--batch 32] [--size 224]

Prints, per variant: training images/s, user and system CPU seconds of the timed steps, and
the peak resident memory of the process; medians over the repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import torch, timm
from imclass.devices import keep_freed_memory
keep = sys.argv[1] == "keep"
if keep:
    keep_freed_memory()
size, batch, steps = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
model = timm.create_model("tf_efficientnet_lite0", num_classes=3).to(
    memory_format=torch.channels_last)
opt = torch.optim.AdamW(model.parameters(), 1e-3)
x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 3, (batch,))
def step():
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
step(); step()  # warm-up
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(steps):
    step()
wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"images_per_s": batch * steps / wall, "user_s": r1.ru_utime - r0.ru_utime,
                  "system_s": r1.ru_stime - r0.ru_stime, "wall_s": wall,
                  "peak_rss_gb": r1.ru_maxrss / 1e6}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    sys.path.insert(0, ".")
    from bench.own_images import matmul_gflops

    print(f"matmul {matmul_gflops():.0f} GFLOP/s; EfficientNet-Lite0 at {args.size} px, "
          f"batch {args.batch}, {args.steps} timed steps")
    results: dict[str, list[dict]] = {"plain": [], "keep": []}
    for _ in range(args.repeats):
        for variant in results:
            out = subprocess.run([sys.executable, "-c", CHILD, variant, str(args.size),
                                  str(args.batch), str(args.steps)], check=True,
                                 capture_output=True, text=True).stdout
            results[variant].append(json.loads(out.strip().splitlines()[-1]))
    print("| allocator | train images/s | user s | system s | wall s | peak RSS (GB) |")
    print("|---|---|---|---|---|---|")
    for variant, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        name = "keep_freed_memory()" if variant == "keep" else "glibc default"
        print(f"| {name} | {med['images_per_s']:.1f} | {med['user_s']:.1f} | "
              f"{med['system_s']:.1f} | {med['wall_s']:.1f} | {med['peak_rss_gb']:.2f} |")


if __name__ == "__main__":
    main()
