"""`--precision`: bf16 mixed precision where the hardware runs it (a CUDA GPU, a CPU with AMX or AVX512-BF16),
fp32 elsewhere or when asked; evaluation on a CPU stays fp32."""
import pytest
import torch

from imclass import devices
from imclass.config import RunConfig, TrainConfig, override
from imclass.errors import ConfigError
from imclass.devices import autocast, mixed_precision, precision_name
from test_train_loop import run_fit

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("has_amx", [True, False])
def test_auto_is_bf16_on_cuda_and_on_a_cpu_with_native_bf16_only(monkeypatch, has_amx):
    monkeypatch.setattr(devices, "native_bf16", lambda: has_amx)
    assert mixed_precision(CUDA, "auto") is torch.bfloat16
    assert mixed_precision(CPU, "auto") is (torch.bfloat16 if has_amx else None)
    assert precision_name(CPU, "auto") == ("bf16 mixed precision" if has_amx else "fp32")
    for device in (CPU, CUDA):  # asked for by name, it is what runs
        assert mixed_precision(device, "fp32") is None
        assert mixed_precision(device, "bf16") is torch.bfloat16


def test_evaluation_on_a_cpu_stays_fp32_whatever_the_cpu(monkeypatch):
    monkeypatch.setattr(devices, "native_bf16", lambda: True)
    assert not isinstance(autocast(CPU), torch.autocast)
    cast = autocast(CPU, "auto")
    assert isinstance(cast, torch.autocast) and cast.fast_dtype == torch.bfloat16
    assert not isinstance(autocast(CPU, "fp32"), torch.autocast)


def test_an_unknown_precision_is_refused_by_name():
    with pytest.raises(ConfigError, match="precision"):
        override(RunConfig(), {"precision": "fp16"})


def test_bf16_training_is_deterministic_learns_and_differs_from_fp32():
    """The same seed gives bitwise the same bf16 run (the CPU's kernels are deterministic);
    it learns the problem as fp32 does, by a different rounding."""
    cfg = TrainConfig(epochs=4, lr=0.3, precision="bf16")
    first, m1 = run_fit(cfg)
    again, m2 = run_fit(cfg)
    full, m3 = run_fit(TrainConfig(epochs=4, lr=0.3, precision="fp32"))
    losses = [[(h["train_loss"], h["val_loss"]) for h in r.history] for r in (first, again)]
    assert losses[0] == losses[1]
    assert torch.equal(m1[1].weight, m2[1].weight)
    assert first.history[-1]["val_acc"] > 0.9 and full.history[-1]["val_acc"] > 0.9
    assert not torch.equal(m1[1].weight, m3[1].weight)
    assert m1[1].weight.dtype == torch.float32  # the weights stay fp32; only the arithmetic


def test_auto_on_a_cpu_measures_the_model_and_remembers(monkeypatch, tmp_path):
    """With native bf16 the faster precision of this model is chosen from timed steps
    (faked here), once: the second run of the same kind reads the cache."""
    from imclass import precision
    monkeypatch.setenv("IMCLASS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(),
                                torch.nn.LazyLinear(2))
    calls = []

    def timer(seconds_fp32, seconds_bf16):
        def fake(probe, shape, outputs, dtype, batch):
            calls.append(dtype)
            assert batch == precision.probe_batch(shape, 256 if shape[-1] < 64 else 32)
            assert probe is not model  # the run's own model is never stepped
            return seconds_bf16 if dtype is torch.bfloat16 else seconds_fp32
        return fake

    slow_bf16 = precision.choose_cpu_precision(model, "lite", (3, 96, 96), 32, 2,
                                               timer(0.32, 0.47))
    assert slow_bf16[0] == "fp32" and "0.68x" in slow_bf16[1]
    assert calls == [None, torch.bfloat16]
    again = precision.choose_cpu_precision(model, "lite", (3, 96, 96), 32, 2, timer(9, 1))
    assert again[0] == "fp32" and len(calls) == 2  # cached: not measured again
    fast_bf16 = precision.choose_cpu_precision(model, "cnn", (1, 28, 28), 256, 10,
                                               timer(0.19, 0.10))
    assert fast_bf16[0] == "bf16" and len(calls) == 4
    close = precision.choose_cpu_precision(model, "cnn", (1, 32, 32), 256, 10,
                                           timer(0.105, 0.100))
    assert close[0] == "fp32"  # within the margin, fp32: exact and what is exported
    monkeypatch.setattr(precision, "native_bf16", lambda: False)
    assert precision.choose_cpu_precision(model, "x", (3, 8, 8), 4, 2, timer(9, 1))[0] == "fp32"


def test_a_probe_step_runs_the_real_model_in_both_precisions():
    from imclass import precision
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 2))
    assert precision.probe_batch((3, 224, 224), 32) == 8  # the big batch held to 8 images
    assert precision.probe_batch((1, 28, 28), 256) == 256  # small images keep theirs
    ticks = iter(range(100))
    for dtype in (None, torch.bfloat16):
        assert precision.step_seconds(model, (3, 8, 8), 2, dtype, 3, lambda: next(ticks)) == 1
    assert all(p.grad is None for p in model.parameters())


def test_a_probe_leaves_the_runs_random_draws_alone():
    """A run that probes (the first of its kind here) and one whose choice was cached must
    draw the same augmentation and dropout from the same seed."""
    from imclass import precision
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Dropout(0.5),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2)).train()
    torch.manual_seed(7)
    expected = torch.rand(5)
    torch.manual_seed(7)
    precision.step_seconds(model, (3, 8, 8), 2, None, 3)
    torch.testing.assert_close(torch.rand(5), expected)
