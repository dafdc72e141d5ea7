"""Load on `imclass serve`: 16 concurrent clients send 2,000 single-image requests on
loopback; failed requests, latency percentiles, requests/s, the server's resident memory
before and after, and the mean forward-pass batch. Run once with request batching as
shipped and once with --max-batch 1 (each request its own forward pass), side by side.

    .venv/bin/python bench/serve_load.py RUN_DIR [--requests 2000] [--clients 16]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bench.own_images import matmul_gflops  # noqa: E402
from test_serve import start  # noqa: E402  (the tests' way of starting a real server)


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def payloads(count: int = 16) -> list[bytes]:
    from imclass.data import fashion_mnist
    _, test = fashion_mnist.load()
    out = []
    for k in range(count):
        buffer = io.BytesIO()
        Image.fromarray(test.images[k, 0].numpy()).save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out


def load_test(model: Path, requests: int, clients: int, extra: list[str]) -> dict:
    proc, url = start(model, *extra)
    try:
        images = payloads()
        with httpx.Client() as warm:  # first requests pay for lazy set-up
            for data in images:
                warm.post(f"{url}/predict", files={"files": ("w.png", data, "image/png")})
        before = resident_mb(proc.pid)
        health0 = httpx.get(f"{url}/health").json()

        def client(index: int) -> list[tuple[float, bool]]:
            out = []
            with httpx.Client(timeout=30) as http:
                for k in range(index, requests, clients):
                    start_s = time.perf_counter()
                    try:
                        r = http.post(f"{url}/predict", files={
                            "files": (f"{k}.png", images[k % len(images)], "image/png")})
                        ok = r.status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    out.append((time.perf_counter() - start_s, ok))
            return out
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            results = [x for part in pool.map(client, range(clients)) for x in part]
        wall = time.perf_counter() - started
        health1 = httpx.get(f"{url}/health").json()
        after = resident_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    ms = np.array([t for t, _ in results]) * 1e3
    passes = health1["batches"] - health0["batches"]
    return {"failed": sum(not ok for _, ok in results), "p50": np.percentile(ms, 50),
            "p95": np.percentile(ms, 95), "p99": np.percentile(ms, 99),
            "rps": len(results) / wall, "rss_before": before, "rss_after": after,
            "batch": (health1["images"] - health0["images"]) / max(1, passes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    from imclass.commands.export import export

    print(f"{date.today()}: matmul {matmul_gflops():.0f} GFLOP/s (4096x4096 fp32); "
          f"{args.clients} clients, {args.requests} requests of one 28x28 PNG", flush=True)
    model, _ = export(args.run_dir, Path("runs/bench-serve/model.onnx"))
    rows = {"batched (--max-batch 32 --max-wait-ms 5, the default)": [],
            "one request per forward pass (--max-batch 1)": ["--max-batch", "1"]}
    print("\n| server | failed | p50 ms | p95 ms | p99 ms | requests/s | mean batch | "
          "RSS before -> after MB |\n|---|---:|---:|---:|---:|---:|---:|---|")
    for name, extra in rows.items():
        r = load_test(model, args.requests, args.clients, extra)
        print(f"| {name} | {r['failed']} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | "
              f"{r['rps']:.0f} | {r['batch']:.1f} | {r['rss_before']:.0f} -> "
              f"{r['rss_after']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
