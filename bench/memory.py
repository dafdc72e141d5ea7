"""Peak memory of whole imclass processes against the number of test images (issue 33): the
target is memory bounded by the batch, not by the dataset.

    .venv/bin/python bench/memory.py [--sizes 1000,10000,50000] [--only cnn-28,tiny-224]
                                     [--work runs/bench-memory]

Cases (each a fresh process per command and test-set size):
- cnn-28: the default cnn at Fashion-MNIST's own 28 px;
- tiny-224: a small cnn (widths 4,8,16) at 224 px: every image resized from 28 px as it is drawn,
  evaluated in batches capped by pixels; cheap enough to score 50,000 images at 224 px on 2 cores;
- lite0-224: EfficientNet-Lite0, pretrained, at 224 px: the seed's transfer-learning step
  (`--subset 300 --freeze-epochs 1 --epochs 2`), at most 10,000 test images (50,000 at 224 px
  would take 20 minutes of scoring on 2 cores; tiny-224 covers that size);
- photos-20000: `imclass train` on a folder of 20,000 Fashion-MNIST images written as 224 px PNGs
  (`--photos`; decoded once into the decode cache, a memory-mapped file).
The Fashion-MNIST test set is made N images long by repeating the official 10,000 (a view of its
rows, registered as the built-in source `fashion-mnist-N` inside the measured process): train
(which evaluates), `evaluate` and `predict` (over N PNGs written once) are run per size.

Printed: per process, the peak resident set (`ru_maxrss`, from wait4) and the peak anonymous
memory (`RssAnon`, sampled every 50 ms: what cannot be dropped; the resident set also counts
pages of memory-mapped files such as the decode cache, which the kernel reclaims under
pressure), seconds, and the growth of the peak from 10,000 to 50,000 test images.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.own_images import matmul_gflops  # noqa: E402

CASES = {
    "cnn-28": ["--subset", "3000", "--epochs", "1"],
    "tiny-224": ["--subset", "3000", "--epochs", "1", "--image-size", "224",
                 "--widths", "4,8,16", "--depths", "1,1,1"],
    "lite0-224": ["--subset", "300", "--model", "efficientnet_lite0", "--pretrained",
                  "--freeze-epochs", "1", "--epochs", "2"],
}
LITE0_MAX_TEST = 10_000
PREDICT_MAX = 10_000  # predict over PNG files: the folder is written once, this many at most


def register_repeated(name: str) -> None:
    """Inside the measured process: `fashion-mnist-N`, Fashion-MNIST whose test split is the
    official 10,000 images repeated to N (row indices into the same store: no pixel copied)."""
    import torch

    from imclass import data
    from imclass.config import DataConfig

    count = int(name.rsplit("-", 1)[1])

    def repeated(cfg: DataConfig):
        loaded = data.SOURCES["fashion-mnist"](cfg)
        test = loaded.test.take(torch.arange(count) % len(loaded.test))
        return data.Loaded(loaded.train, test)

    data.SOURCES[name] = repeated


def child(argv: list[str]) -> int:
    """`bench/memory.py child SOURCE imclass-args...`: the imclass command line with SOURCE
    registered."""
    from imclass import cli

    register_repeated(argv[0])
    return cli.main(argv[1:])


def measure(command: list[str], log: Path) -> dict:
    """Run `command`, return its peak RSS and peak anonymous memory (MiB) and seconds."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                env=os.environ | {"HF_HUB_OFFLINE": "1"})
    peak_anon = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                with open(f"/proc/{proc.pid}/status") as fh:
                    for line in fh:
                        if line.startswith("RssAnon:"):
                            peak_anon[0] = max(peak_anon[0], int(line.split()[1]))
            except (OSError, ValueError):
                pass
            done.wait(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    thread.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}); see {log}")
    return {"rss": usage.ru_maxrss / 1024, "anon": peak_anon[0] / 1024,
            "seconds": time.perf_counter() - start}


def write_pngs(folder: Path, count: int) -> Path:
    """`count` Fashion-MNIST test images as PNGs (repeating the 10,000), written once."""
    from PIL import Image

    from imclass.data import fashion_mnist

    if (folder / "done").is_file():
        return folder
    _, test = fashion_mnist.load(None, None)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        Image.fromarray(test.store[k % len(test), 0].numpy()).save(folder / f"{k:05d}.png")
    (folder / "done").write_text("")
    return folder


def write_photos(root: Path, count: int, side: int = 224) -> Path:
    """A class-folder dataset of `count` Fashion-MNIST images upscaled to side x side PNGs
    (a fifth of them in test/), written once."""
    import numpy as np
    from PIL import Image

    from imclass.data import fashion_mnist

    if (root / "done").is_file():
        return root
    train, _ = fashion_mnist.load(None, None)
    names = [n.replace("/", "-") for n in train.class_names]
    for k in range(count):
        split = "test" if k % 5 == 0 else "train"
        folder = root / split / names[int(train.labels[k])]
        folder.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(np.ascontiguousarray(train.store[k, 0].numpy()))
        img.resize((side, side), Image.Resampling.BILINEAR).save(folder / f"{k:05d}.png")
    (root / "done").write_text("")
    return root


def fashion_case(name: str, flags: list[str], sizes: list[int], work: Path) -> list[dict]:
    imclass = [sys.executable, str(Path(__file__).resolve()), "child"]
    rows = []
    for n in sizes:
        if name == "lite0-224" and n > LITE0_MAX_TEST:
            continue
        source, run = f"fashion-mnist-{n}", work / f"{name}-{n}"
        row = {"case": name, "test images": n}
        row["train"] = measure([*imclass, source, "train", "--data", source, "--out", str(run),
                                "--overwrite", "--quiet", *flags], work / f"{name}-{n}-train.log")
        row["evaluate"] = measure([*imclass, source, "evaluate", str(run), "--quiet"],
                                  work / f"{name}-{n}-evaluate.log")
        if n <= PREDICT_MAX:
            pngs = write_pngs(work / f"pngs-{n}", n)
            row["predict"] = measure([*imclass, source, "predict", str(run), str(pngs), "--out",
                                      str(work / f"{name}-{n}.csv")],
                                     work / f"{name}-{n}-predict.log")
        rows.append(row)
        print(line(row), flush=True)
    return rows


def line(row: dict) -> str:
    parts = [f"{row['case']} {row['test images']:>6} test images"]
    for command in ("train", "evaluate", "predict"):
        if command in row:
            r = row[command]
            parts.append(f"{command} {r['rss']:.0f} MiB (anon {r['anon']:.0f}) {r['seconds']:.0f} s")
    return " | ".join(parts)


def table(rows: list[dict]) -> None:
    print("\n| case | test images | train peak RSS / anon (MiB) | evaluate | predict |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        cells = [f"{row[c]['rss']:.0f} / {row[c]['anon']:.0f}" if c in row else "-"
                 for c in ("train", "evaluate", "predict")]
        print(f"| {row['case']} | {row['test images']:,} | " + " | ".join(cells) + " |")
    for case in dict.fromkeys(r["case"] for r in rows):
        by_size = {r["test images"]: r for r in rows if r["case"] == case}
        if 10_000 in by_size and 50_000 in by_size:
            for command in ("train", "evaluate"):
                a, b = by_size[10_000][command]["rss"], by_size[50_000][command]["rss"]
                print(f"{case} {command}: peak RSS {b / a - 1:+.1%} from 10,000 to 50,000 test "
                      "images")


def main() -> None:
    if sys.argv[1:2] == ["child"]:
        sys.exit(child(sys.argv[2:]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--only", help="comma-separated cases (default: all Fashion-MNIST ones)")
    parser.add_argument("--photos", type=int, default=0,
                        help="also train on a folder of this many 224 px PNGs (e.g. 20000)")
    parser.add_argument("--work", default="runs/bench-memory")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"{date.today()}: {platform.processor() or platform.machine()}, {os.cpu_count()} "
          f"cores; matmul {matmul_gflops():.0f} GFLOP/s (4096x4096 fp32); command: `python "
          f"bench/memory.py {' '.join(sys.argv[1:])}`", flush=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    cases = args.only.split(",") if args.only else list(CASES)
    rows = [row for name in cases if name in CASES
            for row in fashion_case(name, CASES[name], sizes, work)]
    if rows:
        table(rows)
    if args.photos:
        data = write_photos(work / f"photos-{args.photos}", args.photos)
        flags = ["--image-size", "224", "--model", "cnn", "--widths", "8,16,32,64",
                 "--depths", "1,1,1,1", "--epochs", "1"]
        r = measure([sys.executable, "-m", "imclass", "train", "--data", str(data), "--out",
                     str(work / "photos-run"), "--overwrite", "--quiet", *flags],
                    work / "photos-train.log")
        print(f"\nphotos-{args.photos} (224 px PNGs, `imclass train {' '.join(flags)}`): peak "
              f"RSS {r['rss']:.0f} MiB, anonymous {r['anon']:.0f} MiB, {r['seconds']:.0f} s")


if __name__ == "__main__":
    main()
