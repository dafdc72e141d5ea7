"""A model outside imclass: exported files (ONNX, TorchScript, torch.export, int8) agree with
eager PyTorch, each task's decisions survive export, and predict scores folders, globs and
CSVs of paths to CSV/JSONL with a row per broken file."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from imagedata import bomb_png, csv_dataset, folder_dataset
from imclass import api, cli
from imclass.contract import METADATA_KEYS
from imclass.predictor import load

FAST = ["--model", "cnn", "--epochs", "5", "--batch-size", "16", "--lr", "0.05", "--quiet"]


def fmnist_pixels(n: int) -> tuple[np.ndarray, np.ndarray]:
    from imclass.data import fashion_mnist
    _, test = fashion_mnist.load()
    return test.images[:n].numpy(), test.labels[:n].numpy()


def assert_same_probabilities(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 1e-4
    assert (a.argmax(1) == b.argmax(1)).all()


def test_onnx_file_alone_matches_eager_pytorch_on_300_test_images(trained_run, tmp_path):
    import onnxruntime as ort

    path, figures = api.export(trained_run, tmp_path / "model.onnx")
    assert path.is_file() and figures is None
    pixels, labels = fmnist_pixels(300)
    eager = load(trained_run, backend="torch")
    exported = load(path)
    assert (eager.backend, exported.backend) == ("torch", "onnx")
    assert_same_probabilities(eager.probabilities(pixels), exported.probabilities(pixels))
    assert (exported.probabilities(pixels).argmax(1) == labels).mean() > 0.5  # it learned
    for batch in (1, 37):  # the batch dimension is dynamic
        assert_same_probabilities(eager.probabilities(pixels[:batch]),
                                  exported.probabilities(pixels[:batch]))
    # what another language sees: plain ONNX Runtime, uint8 in, the contract in the metadata
    session = ort.InferenceSession(str(path))
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape[1:]) == ("pixels", "tensor(uint8)", [1, 28, 28])
    assert out.name == "probabilities" and isinstance(inp.shape[0], str)
    meta = session.get_modelmeta().custom_metadata_map
    assert set(METADATA_KEYS) <= set(meta)
    assert json.loads(meta["class_names"]) == list(eager.class_names)
    assert json.loads(meta["task"]) == "multiclass"
    assert json.loads(meta["test_metrics"])["accuracy"] == pytest.approx(json.loads(
        (trained_run / "metrics.json").read_text())["test"]["accuracy"])
    raw = session.run(None, {"pixels": pixels[:5]})[0]
    assert_same_probabilities(raw, eager.probabilities(pixels[:5]))
    assert exported.contract == eager.contract


@pytest.mark.parametrize("fmt,backend", [("torchscript", "torchscript"), ("pt2", "torch-export")])
def test_torchscript_and_torch_export_files_match_eager_pytorch(trained_run, tmp_path, fmt,
                                                                backend):
    path, _ = api.export(trained_run, None if fmt == "pt2" else tmp_path / "m.ts", fmt)
    assert path.suffix == {"torchscript": ".ts", "pt2": ".pt2"}[fmt]
    pixels, _ = fmnist_pixels(300)
    exported = load(path)
    eager = load(trained_run, backend="torch")
    assert exported.backend == backend and exported.contract == eager.contract
    assert_same_probabilities(eager.probabilities(pixels),
                              exported.probabilities(pixels))
    assert exported.probabilities(pixels[:3]).shape == (3, 10)


@pytest.mark.slow
def test_a_timm_model_with_a_centre_crop_exports_with_parity(tmp_path):
    root = folder_dataset(tmp_path / "colours", "multiclass", n_train=12, n_test=6)
    out = tmp_path / "run"
    assert cli.main(["train", "--data", str(root), "--out", str(out), "--cache-dir",
                     str(tmp_path / "cache"), "--model", "efficientnet_lite0", "--pretrained",
                     "false", "--image-size", "32", "--crop-pct", "0.8", "--fit", "crop",
                     "--epochs", "1", "--batch-size", "8", "--quiet"]) == 0
    path, _ = api.export(out)
    eager, exported = load(out), load(path)
    c = exported.contract
    assert (c.input_size, c.decoded_size, c.fit) == (32, 40, "crop")  # the crop is in the graph
    files = sorted(p for p in (root / "test").rglob("*") if p.is_file())
    pixels = np.stack([eager.pixels(f) for f in files])
    assert pixels.shape == (18, 3, 40, 40)
    assert_same_probabilities(eager.probabilities(pixels), exported.probabilities(pixels))
    assert [r["decision"] for r in api.predict(path, files)] == \
        [r["decision"] for r in api.predict(out, files)]


@pytest.fixture(scope="module")
def task_runs(tmp_path_factory):
    """A short real run for each task with its own decision rule (csv datasets, cnn)."""
    root = tmp_path_factory.mktemp("tasks")
    runs = {}
    for task, n_train in (("binary", 60), ("multilabel", 90), ("hierarchical", 60)):
        data = csv_dataset(root / f"{task}-data", task, n_train=n_train, n_test=24)
        out = root / task
        assert cli.main(["train", "--data", str(data), "--out", str(out), "--cache-dir",
                         str(root / "cache"), *FAST]) == 0
        runs[task] = (out, sorted((data / "test" / "images").iterdir()))
    return runs


@pytest.mark.slow
def test_predict_top_k_stops_at_the_classes_and_names_a_missing_file_once(task_runs,
                                                                         tmp_path, capsys):
    run, images = task_runs["binary"]
    out = tmp_path / "two.csv"
    assert cli.main(["predict", str(run), str(images[0]), "--top-k", "3", "--out",
                     str(out)]) == 0
    header = out.read_text().splitlines()[0].split(",")
    assert "class_2" in header and "class_3" not in header  # two classes, two columns
    capsys.readouterr()
    assert cli.main(["predict", str(run), str(tmp_path / "gone.png")]) == 1
    line = capsys.readouterr().out.strip()
    assert line == f"{tmp_path / 'gone.png'}: error: does not exist"


@pytest.mark.slow
@pytest.mark.parametrize("task", ["binary", "multilabel", "hierarchical"])
def test_each_task_decides_the_same_after_export(task_runs, task):
    run, images = task_runs[task]
    path, _ = api.export(run)
    exported = load(path)
    saved = json.loads((run / "checkpoints" / "best.json").read_text())
    assert exported.contract.task == task
    assert list(exported.contract.thresholds or []) == (saved.get("thresholds") or [])
    if task in ("binary", "multilabel"):
        assert exported.contract.thresholds, "binary and multilabel runs tune thresholds"
    eager_rows, onnx_rows = api.predict(run, images, top_k=3), api.predict(path, images, top_k=3)
    assert len(onnx_rows) == len(images) == 24
    key = {"binary": "decision", "multilabel": "labels", "hierarchical": "path"}[task]
    for e, o in zip(eager_rows, onnx_rows):
        assert "error" not in o
        if task == "hierarchical":
            assert [n["node"] for n in e["path"]] == [n["node"] for n in o["path"]]
            assert np.allclose([n["probability"] for n in e["path"]],
                               [n["probability"] for n in o["path"]], atol=1e-4)
            assert o["path"][-1]["node"] == o["decision"]
        else:
            assert e[key] == o[key]
        assert np.allclose([t["probability"] for t in e["top"]],
                           [t["probability"] for t in o["top"]], atol=1e-4)
    if task == "binary":  # the tuned threshold decides, not the larger probability
        t = exported.contract.thresholds[0]
        for o in onnx_rows:
            p_dog = next(x["probability"] for x in o["top"] if x["class"] == "dog")
            assert o["decision"] == ("dog" if p_dog >= t else "cat")


@pytest.mark.slow
def test_int8_export_is_smaller_keeps_accuracy_and_the_contract(trained_run, tmp_path, capsys):
    import onnx

    out = tmp_path / "q.onnx"
    assert cli.main(["export", str(trained_run), "--int8", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out)
    assert "int8: test accuracy" in captured.err and "MB" in captured.err
    fp32, _ = api.export(trained_run, tmp_path / "f.onnx")
    assert out.stat().st_size < 0.5 * fp32.stat().st_size
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    quantized = load(out)
    assert quantized.contract == load(fp32).contract
    pixels, labels = fmnist_pixels(2000)
    acc = [(load(p).probabilities(pixels).argmax(1) == labels).mean() for p in (fp32, out)]
    assert abs(acc[0] - acc[1]) <= 0.02


def write_pngs(folder, pixels) -> list:
    paths = []
    for k, image in enumerate(pixels):
        sub = folder / f"part{k % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        paths.append(sub / f"{k:04d}.png")
        Image.fromarray(image[0]).save(paths[-1])
    return paths


def test_predict_a_folder_to_csv_scores_all_and_lists_broken_files(trained_run, tmp_path,
                                                                   capsys):
    pixels, _ = fmnist_pixels(150)
    folder = tmp_path / "incoming"
    write_pngs(folder, pixels)
    (folder / "part0" / "empty.png").write_bytes(b"")
    (folder / "part1" / "page.png").write_text("<html><body>not found</body></html>")
    bomb_png(folder / "part2" / "bomb.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "part0" / "data.bin").write_bytes(b"\0")
    out = tmp_path / "predictions.csv"
    code = cli.main(["predict", str(trained_run), str(folder), "--out", str(out),
                     "--batch-size", "32", "--workers", "2"])
    assert code == 1  # some failed: the exit code says so
    captured = capsys.readouterr()
    printed = captured.out
    assert "150 of 153 images scored" in printed and "3 failed" in printed
    assert str(out) in printed and "images a second" in printed
    assert "skipped 2 file(s) that are not images" in captured.err  # counted, not silent
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 153
    errors = {r["image"].rsplit("/", 1)[-1]: r["error"] for r in rows if r["error"]}
    assert set(errors) == {"empty.png", "page.png", "bomb.png"}
    assert "empty" in errors["empty.png"] or "cannot" in errors["empty.png"] or \
        "not an image" in errors["empty.png"]
    assert "not an image" in errors["page.png"] and "Pillow's limit" in errors["bomb.png"]
    scored = [r for r in rows if not r["error"]]
    assert all(r["decision"] == r["class_1"] and 0 < float(r["probability_1"]) <= 1
               for r in scored)
    # decoded in two worker processes, the same as in this process one file at a time
    by_path = {r["image"]: r["decision"] for r in scored}
    some = sorted(by_path)[:20]
    assert [r["decision"] for r in api.predict(trained_run, some)] == [by_path[p] for p in some]


def test_predict_takes_globs_and_csvs_of_paths_and_writes_jsonl(trained_run, tmp_path,
                                                                capsys):
    pixels, _ = fmnist_pixels(12)
    paths = write_pngs(tmp_path / "imgs", pixels)
    listing = tmp_path / "list.csv"
    listing.write_text("id,image\n1,imgs/part0/0000.png\n2," + str(paths[1]) +
                       "\n3,imgs/nothere.png\n")
    assert cli.main(["predict", str(trained_run), str(listing), "--json"]) == 1
    results = json.loads(capsys.readouterr().out)
    assert [("error" in r) for r in results] == [False, False, True]
    assert "does not exist" in results[2]["error"]
    out = tmp_path / "p.jsonl"
    assert cli.main(["predict", str(trained_run), str(tmp_path / "imgs" / "**" / "*.png"),
                     "--out", str(out)]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 12 and all(len(x["top"]) == 3 for x in lines)
    assert cli.main(["predict", str(trained_run), str(tmp_path / "imgs" / "*.jpg")]) == 1
    assert "does not exist" in capsys.readouterr().out


def test_predict_refuses_bad_arguments_in_one_line(trained_run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    cases = [([str(tmp_path / "nomodel.onnx"), "x.png"], "does not exist"),
             ([str(trained_run), "x.png", "--out", str(tmp_path / "p.txt")], ".csv or .jsonl"),
             ([str(trained_run), str(tmp_path / "empty")], "no images to predict"),
             ([str(tmp_path / "empty"), "x.png"], "checkpoint file")]
    for args, message in cases:
        assert cli.main(["predict", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07 not a model")
    assert cli.main(["predict", str(garbage), "x.png"]) == 2
    assert "not a readable ONNX model" in capsys.readouterr().err


def test_backend_onnx_on_a_run_folder_exports_once_and_agrees(trained_run, tmp_path):
    import imclass

    pixels, _ = fmnist_pixels(8)
    paths = write_pngs(tmp_path / "imgs", pixels)
    onnx_file = trained_run / "model.onnx"
    onnx_file.unlink(missing_ok=True)
    rows = api.predict(trained_run, paths, backend="onnx")
    assert onnx_file.is_file(), "the run's model.onnx is exported on first use"
    stamp = onnx_file.stat().st_mtime_ns
    assert imclass.load(trained_run, backend="onnx").backend == "onnx"
    assert onnx_file.stat().st_mtime_ns == stamp, "and reused while the checkpoint is older"
    assert [r["decision"] for r in rows] == [r["decision"] for r in api.predict(trained_run,
                                                                                paths)]
    from_arrays = imclass.load(onnx_file).predict([p[0] for p in pixels])  # HxW uint8 arrays
    assert [r["decision"] for r in from_arrays] == [r["decision"] for r in rows]


def test_the_plain_onnxruntime_example_in_docs_deploy_runs(trained_run, tmp_path, capsys):
    """docs/deploy.md shows how to call the file without imclass: that code must work."""
    import re
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "deploy.md").read_text()
    example = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S)
                   if "InferenceSession" in b)
    model, _ = api.export(trained_run, tmp_path / "model.onnx")
    pixels, _ = fmnist_pixels(1)
    Image.fromarray(pixels[0, 0]).save(tmp_path / "shoe.png")
    code = example.replace('"model.onnx"', repr(str(model))).replace(
        '"shoe.png"', repr(str(tmp_path / "shoe.png")))
    assert code != example
    exec(compile(code, "docs/deploy.md", "exec"), {})
    printed = capsys.readouterr().out.strip()
    assert printed == api.predict(model, [tmp_path / "shoe.png"])[0]["decision"]


def test_export_refuses_bad_arguments_in_one_line(trained_run, tmp_path, capsys):
    cases = [([str(trained_run), "--format", "torchscript", "--out", str(tmp_path / "m.onnx")],
              "must end in .ts"),
             ([str(trained_run), "--format", "pt2", "--int8"], "--int8 needs --format onnx"),
             ([str(tmp_path / "norun")], "does not exist")]
    for args, message in cases:
        assert cli.main(["export", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not list(tmp_path.glob("*.onnx"))
    path, _ = api.export(trained_run, tmp_path)  # a folder: the default name inside it
    assert path == tmp_path / "model.onnx" and path.is_file()


def test_a_run_is_loaded_from_its_trace_which_matches_the_eager_model(trained_run, tmp_path,
                                                                     monkeypatch):
    """Without ONNX Runtime, training leaves the best model traced beside its checkpoint:
    predict and serve load it without rebuilding the network, with the same probabilities; a
    trace that does not hold the checkpoint's weights is never used."""
    import shutil

    from imclass import predictor
    other = tmp_path / "run"
    shutil.copytree(trained_run, other)
    (other / "checkpoints" / predictor.NETWORK).unlink()  # as trained without ONNX Runtime
    predictor.save_traced(other)
    pixels, _ = fmnist_pixels(64)
    eager = predictor.load_torch_run(other, traced=False)
    with monkeypatch.context() as m:
        m.setattr("imclass.runfolder.load_run", lambda *a, **k: pytest.fail("network rebuilt"))
        fast = load(other)
    assert fast.backend == "torch" and fast.contract == eager.contract
    assert_same_probabilities(fast.probabilities(pixels), eager.probabilities(pixels))
    assert_used_only_while_current(other, predictor.load_traced, predictor.TRACED, trained_run)


def assert_used_only_while_current(run, loader, name: str, original) -> None:
    """`loader` (load_traced, load_run_network) takes the run's saved model only while it
    was made from the checkpoint there: not once the sidecar is edited, the weights are
    damaged or the file is cut short."""
    import shutil

    assert loader(run) is not None
    sidecar = run / "checkpoints" / "best.json"
    kept = sidecar.read_text()
    sidecar.write_text(json.dumps({**json.loads(kept), "thresholds": [0.9]}))  # edited later
    assert loader(run) is None
    sidecar.write_text(kept)
    weights = run / "checkpoints" / "best.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # damaged weights
    assert loader(run) is None
    shutil.copy(original / "checkpoints" / "best.safetensors", weights)
    assert loader(run) is not None
    (run / "checkpoints" / name).write_bytes(b"cut short")
    assert loader(run) is None


def test_a_run_is_scored_from_its_onnx_network_without_importing_torch(trained_run, tmp_path):
    """Where ONNX Runtime is installed, training leaves the best model as an ONNX network
    beside its checkpoint: `imclass predict RUN image` and `imclass serve RUN`'s start then
    never import torch (its import was two thirds of the command), with the eager model's
    probabilities; a network that does not hold the checkpoint's weights is never used."""
    import shutil
    import subprocess
    import sys

    from PIL import Image

    from imclass import predictor
    assert (trained_run / "checkpoints" / predictor.NETWORK).is_file()
    pixels, _ = fmnist_pixels(64)
    fast = load(trained_run)
    assert fast.backend == "onnx" and fast.source == str(trained_run)
    eager = predictor.load_torch_run(trained_run, traced=False)
    assert fast.contract == eager.contract
    assert_same_probabilities(fast.probabilities(pixels), eager.probabilities(pixels))
    image = tmp_path / "shoe.png"
    Image.fromarray(pixels[0, 0]).save(image)
    code = ("import sys; from imclass import cli; code = cli.main(['predict', sys.argv[1], "
            "sys.argv[2], '--json']); assert 'torch' not in sys.modules, 'torch imported'; "
            "from imclass.commands.serve import create_app; from imclass.predictor import load; "
            "create_app(load(sys.argv[1])); assert 'torch' not in sys.modules, 'by serve'; "
            "sys.exit(code)")
    out = subprocess.run([sys.executable, "-c", code, str(trained_run), str(image)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)[0]["top"][0]["class"] == eager.predict([image])[0]["top"][0][
        "class"]
    other = tmp_path / "run"
    shutil.copytree(trained_run, other)
    assert_used_only_while_current(other, predictor.load_run_network, predictor.NETWORK,
                                   trained_run)
    assert load(other).backend == "torch"  # the eager model instead


def test_the_test_pass_on_a_cpu_runs_the_exported_network_with_the_eager_figures(trained_run,
                                                                                 tmp_path):
    """On a CPU, evaluation scores the test set with the run's own ONNX network (the file
    predict loads): the same probabilities as the eager model and, from its second output,
    the same features for the embedding figure; `imclass evaluate` then gives the figures
    training wrote. A network of other weights is never used."""
    import shutil

    import torch

    from imclass import evaluation, predictor
    from imclass.data import load_source
    from imclass.metrics import EmbeddingTap
    from imclass.runfolder import load_run

    run = load_run(trained_run)
    network = predictor.exported_network(trained_run, torch.device("cpu"))
    assert [o.name for o in network.get_outputs()] == ["probabilities", "features"]
    test = load_source(run.data_config).test
    assert evaluation.network_fits(network, test, None)
    rows = np.arange(0, len(test), 7)
    tap, eager_tap = EmbeddingTap(rows), EmbeddingTap(rows)
    probs, labels = evaluation.score_with_network(network, test, 100, tap)
    eager, eager_labels = evaluation.predict_split(run.model, test, run.norm, 100, run.task,
                                                   run.device, tap=eager_tap)
    assert_same_probabilities(probs, eager)
    assert (labels == eager_labels).all() and len(labels) == len(test)
    assert np.abs(tap.features - eager_tap.features).max() < 1e-3
    assert tap.features.shape == (len(rows), eager_tap.features.shape[1])
    # a run whose network is stale is scored by its eager model, to the same figures
    other = tmp_path / "run"
    shutil.copytree(trained_run, other)
    before = json.loads((trained_run / "metrics.json").read_text())["test"]
    assert api.evaluate(other, quiet=True)["plain"]["accuracy"] == before["accuracy"]
    (other / "checkpoints" / "best.onnx").write_bytes(
        (other / "checkpoints" / "best.onnx").read_bytes()[:-10])
    assert predictor.exported_network(other, torch.device("cpu")) is None
    again = api.evaluate(other, quiet=True)["plain"]
    assert again["accuracy"] == before["accuracy"]
    assert again["confusion_matrix"] == before["confusion_matrix"]


def test_a_run_trained_with_test_time_views_predicts_as_its_test_figures_say(tmp_path):
    """--tta and --tta-shift 1: the run's model averages each image over ten views (moved 0 or
    1 px up, down, left or right, each with its mirror image) everywhere it predicts: the test
    figures training writes, the eager model, its ONNX network and an exported file agree on
    all 10,000 test images, and the views are the raw pixels moved with a black border."""
    import dataclasses

    import onnxruntime as ort
    import torch

    from imclass.config import RunConfig, override
    from imclass.contract import Contract
    from imclass.predictor import NETWORK, load_torch_run, pixel_model_of_run
    run = tmp_path / "run"
    api.train(override(RunConfig(), {"subset": 1200, "epochs": 3, "batch_size": 64, "lr": 0.1,
                                     "tta": True, "tta_shift": 1}), run, quiet=True)
    line = json.loads((run / "run.json").read_text())["recipe"]["line"]
    assert "test-time flips, test-time moves of 1 px" in line
    pixels, labels = fmnist_pixels(10_000)
    fast, eager = load(run), load_torch_run(run, traced=False)
    assert fast.backend == "onnx" and fast.contract.flips == eager.contract.flips == (-1,)
    assert fast.contract.shift == eager.contract.shift == 1
    probs = fast.probabilities(pixels)
    assert_same_probabilities(probs, eager.probabilities(pixels))
    tested = json.loads((run / "metrics.json").read_text())["test"]["accuracy"]
    assert (probs.argmax(1) == labels).mean() == pytest.approx(tested, abs=2e-4)
    module, contract = pixel_model_of_run(run, device="cpu")
    plain = module.__class__(module.network, dataclasses.replace(contract, flips=(), shift=0))
    with torch.no_grad():
        x = pixels[:256]
        views = [moved_pixels(x, rows, cols) for rows, cols in
                 ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))]
        by_hand = sum(plain(torch.from_numpy(v)) + plain(torch.from_numpy(v).flip(-1))
                      for v in views) / 10
        assert np.abs(module(torch.from_numpy(x)).numpy() - by_hand.numpy()).max() < 1e-5
        flips_only = module.__class__(module.network, dataclasses.replace(contract, shift=0))
        assert not np.allclose(flips_only(torch.from_numpy(x)).numpy(), by_hand.numpy(),
                               atol=1e-3)
    # an exported file carries the views inside its graph and says so in its metadata
    path, _ = api.export(run, tmp_path / "model.onnx")
    meta = ort.InferenceSession(str(path)).get_modelmeta().custom_metadata_map
    assert json.loads(meta["flips"]) == [-1] and json.loads(meta["shift"]) == 1
    assert_same_probabilities(load(path).probabilities(pixels[:300]), probs[:300])
    older = {k: v for k, v in meta.items() if k not in ("flips", "shift")}  # before --tta
    assert Contract.from_metadata(older, "old.onnx").flips == ()
    assert Contract.from_metadata(older, "old.onnx").shift == 0
    assert (run / "checkpoints" / NETWORK).is_file()


def moved_pixels(pixels: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """uint8 images [N, C, H, W] moved `rows` down and `cols` right, the border black."""
    out = np.zeros_like(pixels)
    h, w = pixels.shape[-2:]
    out[..., max(rows, 0):h + min(rows, 0), max(cols, 0):w + min(cols, 0)] = \
        pixels[..., max(-rows, 0):h + min(-rows, 0), max(-cols, 0):w + min(-cols, 0)]
    return out


def test_test_time_flips_without_training_flips_are_refused_before_training(tmp_path, capsys):
    assert cli.main(["train", "--subset", "200", "--tta", "true", "--hflip-p", "0",
                     "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--tta averages over the flips the run was trained with" in err
    assert err.count("\n") == 1 and not (tmp_path / "run").exists()
    assert cli.main(["train", "--subset", "200", "--tta-shift", "1", "--shift-p", "0",
                     "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--tta-shift 1 averages over moved images" in err
    assert err.count("\n") == 1 and not (tmp_path / "run").exists()
