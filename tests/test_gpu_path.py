"""The accelerator path as far as a CPU-only machine reaches it: `--device cuda` refused in a
sentence, the dataset held on a non-CPU device, bf16 autocast and cuDNN autotuning chosen for
CUDA, and `--compile` (torch.compile) leaving the run's weights and checkpoints as they were."""
import warnings

import pytest
import torch

from imclass import cli
from imclass.data.batches import Batches, Normalization
from imclass.data.images import ImageSet
from imclass.devices import autocast, compiled, tune_backend


def test_device_cuda_without_a_gpu_is_one_sentence(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["train", "--device", "cuda", "--epochs", "1", "--subset", "100"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU is visible" in err and err.count("\n") == 1, err


def test_a_dataset_that_fits_is_held_on_the_accelerator_and_batched_there():
    """'meta' stands in for a GPU: any device but the CPU takes the preloading branch."""
    images = torch.randint(0, 256, (10, 1, 12, 12), dtype=torch.uint8)
    data = ImageSet(images, torch.arange(10) % 2, ("a", "b"))
    batches = Batches(data, 4, Normalization((0.5,), (0.25,)), device="meta")
    assert batches.preloaded and batches.data.store.device.type == "meta"
    shapes = [(tuple(x.shape), x.device.type, y.device.type) for x, y in batches]
    assert shapes == [((4, 1, 12, 12), "meta", "meta")] * 2 + [((2, 1, 12, 12), "meta", "meta")]
    on_cpu = Batches(data, 4, Normalization((0.5,), (0.25,)))
    assert not on_cpu.preloaded  # the CPU gathers each batch from the store instead


def test_a_resized_view_moves_to_the_accelerator_as_stored_and_resizes_there():
    """Fashion-MNIST for a 224 px model goes to the GPU at 28 px (64x fewer bytes)."""
    images = torch.randint(0, 256, (10, 1, 12, 12), dtype=torch.uint8)
    data = ImageSet(images, torch.arange(10) % 2, ("a", "b")).take(torch.arange(2, 10))
    batches = Batches(data.resized(48), 4, Normalization((0.5,), (0.25,)), device="meta")
    assert tuple(batches.data.store.shape) == (8, 1, 12, 12)
    assert [tuple(x.shape) for x, _ in batches] == [(4, 1, 48, 48)] * 2


def test_cuda_gets_bf16_autocast_and_cudnn_autotuning(monkeypatch):
    with warnings.catch_warnings():  # without a GPU torch warns that autocast is disabled
        warnings.simplefilter("ignore", UserWarning)
        cast = autocast(torch.device("cuda"))
    assert isinstance(cast, torch.autocast) and cast.fast_dtype == torch.bfloat16
    assert not isinstance(autocast(torch.device("cpu")), torch.autocast)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    tune_backend(torch.device("cpu"))
    assert torch.backends.cudnn.benchmark is False
    tune_backend(torch.device("cuda"))
    assert torch.backends.cudnn.benchmark is True


def test_compile_shares_the_models_weights():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    assert compiled(model, False) is model
    net = compiled(model, True)
    assert net is not model and net.state_dict().keys() != model.state_dict().keys()
    assert all(a is b for a, b in zip(net.parameters(), model.parameters()))


@pytest.mark.slow
def test_a_compiled_run_ends_where_the_eager_one_does(tmp_path):
    """One epoch on 320 Fashion-MNIST images, eager and under inductor: the same checkpoint
    keys and, within rounding, the same weights. (The test set is left out: its figures
    would double the test's time and say nothing about compilation.)"""
    import imclass
    from imclass.config import RunConfig, override
    from imclass.runfolder import load_run
    runs = {}
    for mode in (False, True):
        cfg = override(RunConfig(), {"subset": 400, "epochs": 1, "batch_size": 128,
                                     "compile": mode,
                                     "precision": "fp32"})  # bf16 rounds 1e-2 apart
        out = imclass.train(cfg, tmp_path / str(mode), quiet=True, evaluate_test=False)
        run = load_run(out, which="last")
        assert run.config.train.compile is mode
        runs[mode] = run.model.state_dict()
    eager, inductor = runs[False], runs[True]
    assert eager.keys() == inductor.keys()
    worst = max((eager[k].float() - inductor[k].float()).abs().max().item() for k in eager)
    assert 0 <= worst < 1e-3, worst
