"""`imclass annotate` with a simulated labeller (an oracle that knows the true labels): test
accuracy after so many labels, images chosen by the model (least sure first, imclass's active
order) against images in random order, and how fast the page answers a label click while the
model trains in the background.

    .venv/bin/python bench/annotate.py [--only fashion,photos,latency] [--seeds 3]
                                       [--no-latency]

Data, written under --work:
- fashion: 10,000 Fashion-MNIST training images as one flat folder of unlabelled PNGs, and
  2,000 of its official test images under heldout/ (never labelled: the test set);
- photos: bench/own_images.py's photo-like set, its 300 training JPEGs as the unlabelled pool
  and its 300 test JPEGs under heldout/.

Both orders run through the same code as the page (imclass.labelstore.LabelStore and
imclass.assistant.Helper): the oracle labels one image at a time, the model refits as the
page's does (each 10% more labels), and the active order is taken afresh after each refit
(the page fetches its next images then too). At each mark a model is fitted on the labels so
far and scored on the held-out images. "Labels to reach X%" interpolates between marks.

The latency part starts a real `imclass annotate` process on the Fashion-MNIST folder and
labels 1,000 images through POST /api/label one after another, as fast as it answers, while the
model decodes, computes features and trains beside it: p50 and p95 of the round trip.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from budget import cpu_name  # noqa: E402
from own_images import matmul_gflops, write_photos  # noqa: E402

FASHION_POOL, FASHION_TEST = 10_000, 2_000
MARKS = {"fashion": (50, 100, 200, 300, 400, 500, 700, 1000, 1500, 2000),
         "photos": (15, 30, 50, 100, 150, 200, 300)}
TARGET = {"fashion": 0.85, "photos": 0.93}
MIN_LABELS = 3  # a class's labels before the first model (the page's default is 5)


def write_fashion_pool(root: Path) -> tuple[Path, dict[str, str], list[str]]:
    from imclass.data import fashion_mnist

    train, test = fashion_mnist.load(None, None)
    rng = np.random.default_rng(0)
    truth = {}
    names = [n.replace("/", "-") for n in train.class_names]
    if not (root / "done").is_file():
        shutil.rmtree(root, ignore_errors=True)
        (root / "heldout").mkdir(parents=True)
    for split, data, n, prefix in ((train, train, FASHION_POOL, ""),
                                   (test, test, FASHION_TEST, "heldout/")):
        picks = rng.choice(len(data.labels), n, replace=False)
        for i in picks:
            name = f"{prefix}{i:05d}.png"
            truth[name] = names[int(data.labels[i])]
            if not (root / "done").is_file():
                Image.fromarray(data.images[i, 0].numpy()).save(root / name)
    (root / "done").write_text("")
    return root, truth, names


def photos_pool(work: Path) -> tuple[Path, dict[str, str], list[str]]:
    from own_images import PHOTO_CLASSES

    source = write_photos(work / "photo-set")
    root, truth = work / "photos", {}
    for split, prefix in (("train", ""), ("test", "heldout/")):
        for path in sorted((source / split).glob("*/*.jpg")):
            name = f"{prefix}{split}-{path.name}"
            truth[name] = path.parent.name
            if not (root / name).is_file():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, root / name)
    return root, truth, list(PHOTO_CLASSES)


def reset(store, helper) -> None:
    for item in store.items:
        item.labels, item.version = (), 0
    store.csv_file.unlink(missing_ok=True)
    helper.scores, helper.doubts, helper.reviewed_at = None, [], 0


def accuracy(helper, heldout: list[str], truth: dict[str, str], classes: list[str]) -> float:
    probs = helper.scores.probs[[helper.row[n] for n in heldout]]
    return float(np.mean([classes[k] == truth[n] for k, n in zip(probs.argmax(1), heldout)]))


def simulate(store, helper, truth, classes, order: str, marks, seed: int = 0) -> dict:
    """Label in `order` (random or active) up to the last mark; accuracy at each mark."""
    reset(store, helper)
    pool = [n for n in helper.names if not n.startswith("heldout/") and n in helper.row]
    heldout = [n for n in helper.names if n.startswith("heldout/") and n in helper.row]
    queue = list(np.random.default_rng(seed).permutation(pool))
    helper.seed = seed  # the active order's random share and the guesses drawn
    done, results, started, fits = set(), {}, time.monotonic(), 0
    while len(done) < marks[-1]:
        name = next(n for n in queue if n not in done)
        store.set(name, [truth[name]], 0)
        done.add(name)
        if helper.step():  # refits as on the page, in either order (a self-training
            fits += 1      # model builds on the last one's guesses)
            if order == "active":
                queue = [n for n in helper.unlabelled("active")
                         if not n.startswith("heldout/")]
        if len(done) in marks:
            fitted = helper.scores is not None and helper.scores.labels_seen == len(done)
            if fitted or helper.step(force=True):
                results[len(done)] = accuracy(helper, heldout, truth, classes)
            print(f"  {order:>6} {len(done):>5} labels: "
                  f"{results.get(len(done), float('nan')):.2%}  ({helper.status})", flush=True)
    return {"accuracy": results, "seconds": time.monotonic() - started, "fits": fits}


def labels_to_reach(results: dict[int, float], target: float) -> float | None:
    """Labels at which the accuracy first reaches `target`, interpolated between marks."""
    marks = sorted(results)
    for low, high in zip([0] + marks, marks):
        a, b = results.get(low, 0.0), results[high]
        if b >= target:
            if a >= target or low == 0:
                return high
            return round(low + (high - low) * (target - a) / (b - a))
    return None


def start_server(folder: Path, classes: list[str]) -> tuple[subprocess.Popen, str]:
    """A real `imclass annotate` process on the folder (no labels.csv yet), once it answers."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from test_serve import answering, free_port

    (folder / "labels.csv").unlink(missing_ok=True)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "imclass", "annotate", str(folder),
                             "--classes", ",".join(classes), "--port", str(port)],
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    return answering(proc, f"{url}/api/state", 120), url


def latency(folder: Path, truth: dict[str, str], classes: list[str], clicks: int = 1000
            ) -> dict:
    """Label `clicks` images through a real server, one request after another; the round trips
    timed once its first model is trained (it then refits at each 10% more labels, so it is
    training for most of them)."""
    import httpx

    proc, url = start_server(folder, classes)
    client = httpx.Client(timeout=30)
    try:
        queue = client.get(f"{url}/api/queue?mode=plain&limit=500").json()
        timed, fits, busy = [], set(), 0
        for n in range(clicks):
            if n == len(queue):  # the next page of unlabelled images
                queue += client.get(f"{url}/api/queue?mode=plain&limit=500").json()
            item = queue[n]
            state = client.get(f"{url}/api/state").json() if n % 10 == 0 else state
            while n == 100 and not state["trained"]:  # the first model, then the clock
                time.sleep(0.5)
                state = client.get(f"{url}/api/state").json()
            start = time.perf_counter()
            answer = client.post(f"{url}/api/label", json={"name": item["name"], "labels":
                                                          [truth[item["name"]]],
                                                          "version": item["version"]})
            seconds = time.perf_counter() - start
            assert answer.status_code == 200, answer.text
            if state["trained"]:
                timed.append(seconds)
                fits.add(state["model"].split(" in ")[0])
                busy += state["model"].startswith("training on")
        model = client.get(f"{url}/api/state").json()["model"]
    finally:
        proc.terminate()
        proc.wait(30)
        (folder / "labels.csv").unlink(missing_ok=True)
    ms = sorted(1000 * s for s in timed)
    return {"clicks_timed": len(ms), "p50_ms": round(statistics.median(ms), 1),
            "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 1), "max_ms": round(ms[-1], 1),
            "share_while_training": round(busy / max(1, len(ms)), 2),
            "models_seen": len(fits), "model_at_end": model}


def screenshot(folder: Path, truth: dict[str, str], classes: list[str], out: Path) -> None:
    """The README's picture: the page in headless Chromium after 40 labels, grid view."""
    import httpx
    from selenium import webdriver

    proc, url = start_server(folder, classes)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--window-size=1100,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(shutil.which("chromedriver")))
    try:
        for item in httpx.get(f"{url}/api/queue?limit=40").json():
            httpx.post(f"{url}/api/label", json={"name": item["name"], "labels":
                                                 [truth[item["name"]]], "version": 0})
        while not httpx.get(f"{url}/api/state").json()["trained"]:
            time.sleep(0.5)
        driver.get(url)
        time.sleep(2)
        driver.find_element("id", "view").click()
        time.sleep(2)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(30)
        (folder / "labels.csv").unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="fashion,photos")
    parser.add_argument("--work", default="runs/bench-annotate")
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--seeds", type=int, default=1, help="random orders (and first "
                        "labels) per dataset; medians are printed")
    parser.add_argument("--refit-growth", type=float, help="refit at each this share more "
                        "labels (imclass.assistant.REFIT_GROWTH, 0.1), to try another")
    parser.add_argument("--screenshot", metavar="PNG", help="only write the README's picture "
                        "of the page (photos set) to this file")
    args = parser.parse_args()
    import torch

    from imclass import assistant
    from imclass.assistant import Helper
    from imclass.data.decode import inspect_all
    from imclass.labelstore import LabelStore

    print(f"# {cpu_name()}, {torch.get_num_threads()} threads, fp32 matmul "
          f"{matmul_gflops():.0f} GFLOP/s, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d')}", flush=True)
    if args.refit_growth:
        assistant.REFIT_GROWTH = args.refit_growth
        print(f"refitting at each {args.refit_growth:.0%} more labels", flush=True)
    work = Path(args.work)
    if args.screenshot:
        screenshot(*photos_pool(work), Path(args.screenshot))
        return
    results = {}
    for data in args.only.split(","):
        if data == "latency":  # the click timing alone, on the Fashion-MNIST folder
            results["latency"] = latency(*write_fashion_pool(work / "fashion"))
            print(f"label clicks while the model trains: {results['latency']}", flush=True)
            continue
        folder, truth, classes = (write_fashion_pool(work / "fashion") if data == "fashion"
                                  else photos_pool(work))
        store = LabelStore(folder, classes)
        infos = dict(zip([i.name for i in store.items],
                         inspect_all([str(i.path) for i in store.items])))
        # the review queue's out-of-fold models change neither order nor accuracy: left out
        helper = Helper(store, infos, work / "cache", minimum=MIN_LABELS, reviews=False)
        started = time.monotonic()
        helper.prepare()
        prepared = time.monotonic() - started
        print(f"## {data}: {len(helper.row)} images decoded and their features computed in "
              f"{prepared:.0f} s", flush=True)
        runs = [{order: simulate(store, helper, truth, classes, order, MARKS[data], seed)
                 for order in ("random", "active")} for seed in range(args.seeds)]
        store.close()
        results[data] = summarise(runs, MARKS[data], TARGET[data]) | {"prepare_s": prepared}
        if data == "fashion" and not args.no_latency:
            results["latency"] = latency(folder, truth, classes)
            print(f"label clicks while the model trains: {results['latency']}", flush=True)
    (work / "results.json").write_text(json.dumps(results, indent=1, default=str))


def summarise(runs: list[dict], marks, target: float) -> dict:
    """The median accuracy of each order at each mark over the seeds, printed as a table, and
    the labels each order needs to reach `target` (each seed, and the medians' curves)."""
    median = {order: {m: statistics.median(r[order]["accuracy"][m] for r in runs)
                      for m in marks if all(m in r[order]["accuracy"] for r in runs)}
              for order in ("random", "active")}
    print(f"\n| labels | random (median of {len(runs)}) | active | each seed, random / active |"
          "\n|---:|---:|---:|---|")
    for mark in marks:
        cells = [f"{median[o][mark]:.2%}" if mark in median[o] else "no model"
                 for o in ("random", "active")]
        seeds = ", ".join(f"{r['random']['accuracy'].get(mark, 0):.1%} / "
                          f"{r['active']['accuracy'].get(mark, 0):.1%}" for r in runs)
        print(f"| {mark} | {cells[0]} | {cells[1]} | {seeds} |")
    reach = {o: labels_to_reach(median[o], target) for o in median}
    per_seed = [{o: labels_to_reach(r[o]["accuracy"], target) for o in r} for r in runs]
    ratio = reach["random"] / reach["active"] if all(reach.values()) else None
    print(f"labels to reach {target:.0%} (median curves): random {reach['random']}, active "
          f"{reach['active']}" + (f": {ratio:.2f}x fewer" if ratio else "") +
          f"; each seed: {per_seed}", flush=True)
    return {"runs": runs, "median": median, "reach": reach, "per_seed": per_seed,
            "ratio": ratio}


if __name__ == "__main__":
    main()
