"""Memory bounded by the batch, not the dataset (issue 33): sets are views resized and cropped
per batch, evaluation streams, the guard measures a whole evaluation's peak memory at two test
set sizes, and running out of memory is one sentence that keeps what was written."""
import dataclasses
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from imclass import cli
from imclass.config import DataConfig
from imclass.data import load_source
from imclass.data.batches import Batches, Normalization
from imclass.data.images import ImageSet, center_crop, joined, resize_uint8


def small_set(n=12, side=20, channels=1):
    gen = torch.Generator().manual_seed(0)
    store = torch.randint(0, 256, (n, channels, side, side), dtype=torch.uint8, generator=gen)
    return ImageSet(store, torch.arange(n) % 3, ("a", "b", "c"))


def test_a_resized_and_cropped_view_gathers_what_resizing_everything_would():
    data = small_set().take(torch.tensor([7, 2, 9, 4]))
    view = data.resized(48, "bicubic").center_cropped(40)
    whole = center_crop(resize_uint8(data.store[data.rows], 48, "bicubic"), 40)
    assert view.size == (40, 40) and view.store.shape[-1] == 20  # nothing resized up front
    assert torch.equal(view.gather(torch.tensor([3, 0])), whole[[3, 0]])
    assert torch.equal(torch.cat(list(view.chunks(3))), whole)
    assert (view.pixels(1) == whole[1].numpy()).all()


def test_batches_stream_a_view_and_normalisation_reads_it_in_chunks():
    data = small_set(n=10).resized(32)
    norm = Normalization.of(data)
    eager = Normalization.of(data.images)
    assert norm.mean == pytest.approx(eager.mean) and norm.std == pytest.approx(eager.std)
    shapes = [tuple(x.shape) for x, _ in Batches(data, 4, norm)]
    assert shapes == [(4, 1, 32, 32), (4, 1, 32, 32), (2, 1, 32, 32)]


def test_joining_views_of_one_store_copies_no_pixel():
    data = small_set(n=12)
    a, b = data.take(torch.arange(0, 5)), data.take(torch.arange(8, 12))
    both = joined([a.resized(30), b.resized(30)])
    assert both.store is data.store and len(both) == 9 and both.size == (30, 30)
    assert torch.equal(both.labels, torch.cat([a.labels, b.labels]))
    other = small_set(n=4, side=20)
    mixed = joined([a, other])  # another store: its rows are copied at the stored size
    assert mixed.store.shape == (9, 1, 20, 20) and torch.equal(mixed.gather(torch.tensor([6])),
                                                               other.store[[1]])


def test_fashion_mnist_for_a_224_px_model_stays_stored_at_28_px():
    """The seed's transfer-learning step: 70,000 images at 224 px would be 3.5 GB of uint8 (and
    14 GB of float while resizing); held at 28 px they are 55 MB."""
    loaded = load_source(DataConfig(image_size=224))
    for split in (loaded.train, loaded.test):
        assert tuple(split.store.shape[-2:]) == (28, 28) and split.size == (224, 224)
    assert tuple(loaded.test.gather(torch.arange(3)).shape) == (3, 1, 224, 224)


GUARD = textwrap.dedent("""
    import resource, sys, tempfile
    from pathlib import Path
    import torch
    from imclass.config import ModelConfig
    from imclass.data.batches import Normalization
    from imclass.data.images import ImageSet
    from imclass.evaluation import evaluate_model
    from imclass.models import build_model
    from imclass.tasks import get_task

    n, side = int(sys.argv[1]), int(sys.argv[2])
    torch.manual_seed(0)
    names = tuple("abcdefghij")
    store = torch.randint(0, 256, (500, 1, 28, 28), dtype=torch.uint8)
    test = ImageSet(store, torch.arange(500) % 10, names).take(torch.arange(n) % 500)
    model = build_model(ModelConfig(name="cnn", widths=(4, 8), depths=(1, 1)), 1, 10).eval()
    with tempfile.TemporaryDirectory() as folder:
        result = evaluate_model(model, get_task("multiclass"), test.resized(side),
                                Normalization((0.5,), (0.25,)), torch.device("cpu"),
                                Path(folder), batch_size=64)
        assert result["plain"]["count"] == n and (Path(folder) / "gradcam.png").is_file()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB
""")


def peak_kib(n: int, side: int) -> int:
    out = subprocess.run([sys.executable, "-c", GUARD, str(n), str(side)], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.split()[-1])


@pytest.mark.slow
def test_evaluating_ten_times_more_images_takes_no_more_memory():
    """The guard: a whole evaluation (metrics and every figure) of 20,000 test images at
    160 px against one of 2,000. Holding the split whole would cost 20,000 x 160 x 160 bytes
    (512 MB) in uint8 and 2 GB in float; streaming, the peak moves by a few MB."""
    small, large = peak_kib(2_000, 160), peak_kib(20_000, 160)
    assert large - small < 100 * 1024, f"peak resident memory grew {small} -> {large} KiB"


@pytest.mark.slow
def test_running_out_of_memory_in_evaluation_is_one_sentence_and_keeps_the_run(
        tmp_path, monkeypatch, capsys):
    import imclass.commands.train as train_cmd

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:116] data. DefaultCPUAllocator: "
                           "can't allocate memory: you tried to allocate 2147483648 bytes.")

    monkeypatch.setattr(train_cmd, "evaluate_split", out_of_memory)
    run = tmp_path / "run"
    code = cli.main(["train", "--subset", "200", "--epochs", "1", "--out", str(run), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert "ran out of memory while evaluating 10000 test images at 1x28x28" in err
    assert f"imclass evaluate {run} --batch-size" in err
    assert (run / "checkpoints" / "best.safetensors").is_file()
    assert json.loads((run / "run.json").read_text())["epochs_run"] == 1
    monkeypatch.undo()
    assert cli.main(["evaluate", str(run), "--batch-size", "64", "--quiet"]) == 0
    assert json.loads((run / "metrics.json").read_text())["test"]["count"] == 10000
    assert (run / "report.html").is_file()


def test_unset_batch_sizes_are_held_to_the_pixels_of_the_input():
    from imclass.config import RunConfig, override
    from imclass.run_setup import batches_for

    said = []
    plain = RunConfig()
    assert batches_for(plain, 28, said.append) == plain and not said  # Fashion-MNIST as it was
    big = batches_for(plain, 224, said.append)
    assert (big.train.batch_size, big.train.eval_batch_size) == (16, 32)
    assert big.train.lr == pytest.approx(plain.train.lr * 16 / plain.train.batch_size)
    assert len(said) == 1 and "batch: 16 images at 224 px, not 256" in said[0]
    assert batches_for(plain, 96, said.append).train.batch_size == 64
    mine = override(plain, {"batch_size": 128, "eval_batch_size": 512})
    assert batches_for(mine, 224, said.append).train == mine.train  # the user's values win
    # a recipe's batch (not the user's, though not the default) stays where it chose the size
    scratch = dataclasses.replace(plain, train=dataclasses.replace(plain.train, batch_size=128))
    kept = batches_for(scratch, 224, said.append, {"batch_size": 128, "image_size": 224})
    assert kept.train.batch_size == 128
    resized = batches_for(scratch, 224, said.append, {"batch_size": 128, "lr": 0.1})
    assert resized.train.batch_size == 16  # --image-size 224 was the user's
    gpu = batches_for(plain, 224, said.append, device_type="cuda")
    assert (gpu.train.batch_size, gpu.train.eval_batch_size) == (256, 32)
