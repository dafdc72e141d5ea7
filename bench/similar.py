"""Visual similarity on Fashion-MNIST: precision@k of same-class neighbours over the 10,000
test images with the 60,000 training images indexed, and query latency.

    .venv/bin/python bench/similar.py [--run RUN_DIR] [--epochs 3]

Without --run, trains `imclass train --epochs N` first. Prints the matmul speed first (the
machine's speed varies by up to 2x from day to day). Latency: one query at a time, end to
end (PNG bytes decoded, embedded, searched), median of 200; and the search alone.
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.own_images import matmul_gflops  # noqa: E402
from imclass.data import fashion_mnist  # noqa: E402
from imclass.similarity import Searcher, features_of, nearest, unit  # noqa: E402

KS = (1, 5, 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    print(f"{date.today()}: matmul {matmul_gflops():.0f} GFLOP/s (4096x4096 fp32)")
    run = Path(args.run) if args.run else Path(tempfile.mkdtemp()) / "run"
    if not args.run:
        subprocess.run([sys.executable, "-m", "imclass", "train", "--epochs", str(args.epochs),
                        "--quiet", "--out", str(run)], check=True, capture_output=True)
    start = time.perf_counter()
    searcher = Searcher(run)
    print(f"index: {len(searcher.index.features)} images x {searcher.index.features.shape[1]} "
          f"features, built or loaded in {time.perf_counter() - start:.1f} s")
    _, test = fashion_mnist.load()
    pixels, labels = test.images.numpy(), test.labels.numpy()
    queries = unit(features_of(searcher.module, pixels, searcher.device), searcher.index.mean)
    start = time.perf_counter()
    rows, _ = nearest(searcher.index, queries, max(KS))
    search_s = time.perf_counter() - start
    names = test.class_names
    found = np.array([[names.index(searcher.index.items[r]["label"]) for r in row]
                      for row in rows])
    for k in KS:
        print(f"precision@{k}: {(found[:, :k] == labels[:, None]).mean():.4f}")
    print(f"search alone: {search_s / len(queries) * 1e3:.3f} ms a query (all {len(queries)} "
          "test images in one matrix product)")
    pngs = []
    for img in pixels[:200, 0]:
        buffer = io.BytesIO()
        Image.fromarray(img).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    times = []
    for data in pngs:
        start = time.perf_counter()
        searcher.search([data], 8)
        times.append(time.perf_counter() - start)
    print(f"one query end to end (PNG -> 8 neighbours): median {statistics.median(times) * 1e3:.1f}"
          f" ms over {len(times)}")


if __name__ == "__main__":
    main()
