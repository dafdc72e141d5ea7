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
