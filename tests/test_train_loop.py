import copy

import pytest
import torch

from imclass.config import TrainConfig
from imclass.data.batches import Batches, Normalization
from imclass.data.images import ImageSet
from imclass.tasks import get_task
from imclass.training import (EarlyStopping, OverfitWatch, fit, make_optimizer, validate,
                              weight_average)


def record(epoch, train_loss, val_loss, since_best=0):
    return {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
            "epochs_since_best": since_best}


def test_early_stopping_waits_for_patience():
    stop = EarlyStopping(patience=2)
    assert stop("epoch_end", record(3, 1, 1, since_best=1)) is None
    assert stop("epoch_end", record(4, 1, 1, since_best=2)) == "stop"
    assert EarlyStopping(None)("epoch_end", record(9, 1, 1, since_best=50)) is None


def test_overfit_warning_needs_rising_val_and_falling_train_loss_in_a_row():
    messages = []
    watch = OverfitWatch(epochs=3, log=messages.append)
    for i, (tr, va) in enumerate([(1.0, 0.9), (0.8, 0.8), (0.7, 0.85), (0.6, 0.9)], 1):
        watch("epoch_end", record(i, tr, va))
    assert [w["epoch"] for w in watch.warnings] == [4] and "overfitting" in messages[0]
    calm = OverfitWatch(epochs=3, log=messages.append)
    for i, (tr, va) in enumerate([(1.0, 0.9), (0.8, 0.95), (0.7, 0.9), (0.6, 0.95)], 1):
        calm("epoch_end", record(i, tr, va))
    assert calm.warnings == []


def test_overfit_warning_is_said_once_then_only_when_much_worse():
    messages = []
    watch = OverfitWatch(epochs=2, log=messages.append)
    losses = [(1.0, 0.50), (0.9, 0.60), (0.8, 0.62), (0.7, 0.64), (0.6, 0.75), (0.5, 0.76)]
    for i, (tr, va) in enumerate(losses, 1):
        watch("epoch_end", record(i, tr, va))
    assert [w["epoch"] for w in watch.warnings] == [2, 3, 4, 5, 6]  # the report: every one
    # said at epoch 2 (0.10 above the lowest), then at 5 (0.25: over twice that)
    assert [m.split(":")[1].split()[-1] for m in messages] == ["2", "5"]


def test_weight_decay_spares_biases_and_batchnorm():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    groups = make_optimizer(model, TrainConfig(weight_decay=0.1)).param_groups
    assert [len(g["params"]) for g in groups] == [1, 3]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_a_cpu_optimizer_is_fused_and_a_reloaded_one_continues_as_if_never_saved(optimizer):
    """One kernel over raw memory: the saved (contiguous) momentum of a channels-last
    convolution must come back in its parameter's layout, or each weight would take another
    weight's momentum."""
    from imclass import resume
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(),
                                torch.nn.Linear(128, 2)).to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 6, 6).contiguous(memory_format=torch.channels_last)
    cfg = TrainConfig(optimizer=optimizer, lr=0.1)

    def step(m, opt):
        opt.zero_grad()
        m(x).square().sum().backward()
        opt.step()
    first = make_optimizer(model, cfg)
    assert all(g["fused"] for g in first.param_groups)
    step(model, first)
    tensors, plain = resume.split_optimizer(first.state_dict())
    saved = {k: v.clone() for k, v in tensors.items()}  # as written: contiguous copies
    assert any(not v.is_contiguous() for buffers in first.state.values()  # the live ones
               for v in buffers.values() if v.dim() == 4)
    twin = copy.deepcopy(model)
    second = make_optimizer(twin, cfg)
    resume.load_optimizer(second, resume.join_optimizer(saved, plain))
    for _ in range(3):
        step(model, first)
        step(twin, second)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))


def tiny_problem(seed=0):
    """Two classes a linear model separates: bright images vs dark ones."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(64) % 2
    images = (torch.rand(64, 1, 8, 8, generator=g) * 100 + labels.view(-1, 1, 1, 1) * 120)
    data = ImageSet(images.to(torch.uint8), labels, ("dark", "bright"))
    return data, Normalization.of(data.images)


def run_fit(cfg: TrainConfig, callbacks=()):
    torch.manual_seed(cfg.seed)
    data, norm = tiny_problem()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    loss = get_task("multiclass").loss(cfg.loss, cfg.label_smoothing)
    train = Batches(data, 16, norm, shuffle=True, seed=cfg.seed, channels_last=False)
    val = Batches(data, 64, norm, channels_last=False)
    return fit(model, train, val, loss, cfg, torch.device("cpu"), list(callbacks)), model


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
@pytest.mark.parametrize("loss", ["cross-entropy", "mse"])
def test_every_optimizer_and_loss_learns_a_separable_problem(optimizer, loss):
    lr = {"sgd": 0.1, "adam": 0.05, "adamw": 0.05, "rmsprop": 0.01}[optimizer]
    result, _ = run_fit(TrainConfig(epochs=6, lr=lr, optimizer=optimizer, loss=loss,
                                    schedule="constant"))
    assert result.history[-1]["val_acc"] > 0.9
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]


def test_l1_shrinks_weights():
    plain, m0 = run_fit(TrainConfig(epochs=6, lr=0.1, schedule="cosine", weight_decay=0))
    sparse, m1 = run_fit(TrainConfig(epochs=6, lr=0.1, schedule="cosine", weight_decay=0,
                                     l1=0.01))
    assert m1[1].weight.abs().sum() < 0.7 * m0[1].weight.abs().sum()


def test_same_seed_same_history_and_the_best_weights_are_restored():
    cfg = TrainConfig(epochs=4, lr=0.3, schedule="onecycle")
    a, model_a = run_fit(cfg)
    b, model_b = run_fit(cfg)
    strip = [{k: v for k, v in h.items() if k not in ("seconds", "images_per_s")}
             for h in a.history]
    assert strip == [{k: v for k, v in h.items() if k not in ("seconds", "images_per_s")}
                     for h in b.history]
    assert torch.equal(model_a[1].weight, model_b[1].weight)
    assert a.best_epoch == min(a.history, key=lambda h: h["val_loss"])["epoch"]


def test_fit_ends_holding_the_weights_of_the_best_epoch():
    # A constant, far too high learning rate makes validation loss jump about.
    cfg = TrainConfig(epochs=8, lr=3.0, schedule="constant", patience=None)
    result, model = run_fit(cfg)
    assert result.best_epoch < len(result.history), "the last epoch should not be the best here"
    data, norm = tiny_problem()
    loss = get_task("multiclass").loss(cfg.loss, cfg.label_smoothing)
    now = validate(model, Batches(data, 64, norm, channels_last=False), loss, torch.device("cpu"),
                   precision=cfg.precision)  # as fit validated: bf16 where the CPU multiplies bf16 natively
    assert now["loss"] == pytest.approx(result.best_val_loss)


def test_ema_averages_every_step_and_is_what_fit_validates_and_keeps():
    decay = 0.8
    cfg = TrainConfig(epochs=3, lr=3.0, schedule="constant", patience=None, ema=decay)
    torch.manual_seed(0)
    data, norm = tiny_problem()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    ema = weight_average(model, cfg.ema)
    steps, average = [], None

    def after_each_step(event, info):  # the raw weights, as the average saw them
        nonlocal average
        if event == "batch_end":
            w, n = model[1].weight.detach().clone(), len(steps)
            kept = min(decay, (1 + n) / (10 + n))  # warming up: 0.18, 0.25, ... then 0.8
            average = w if average is None else kept * average + (1 - kept) * w
            steps.append(w)
    loss = get_task("multiclass").loss(cfg.loss, cfg.label_smoothing)
    train = Batches(data, 16, norm, shuffle=True, seed=0, channels_last=False)
    val = Batches(data, 64, norm, channels_last=False)
    result = fit(model, train, val, loss, cfg, torch.device("cpu"), [after_each_step], ema=ema)
    assert len(steps) == 3 * len(train) == ema.n_averaged.item()
    assert torch.allclose(ema.module[1].weight, average, atol=1e-6)
    assert not torch.allclose(ema.module[1].weight, steps[-1], atol=1e-3)
    # validated, and kept as the best: the average, not the raw weights
    assert result.history[-1]["val_loss"] == pytest.approx(
        validate(ema.module, val, loss, torch.device("cpu"), precision=cfg.precision)["loss"])
    best = min(result.history, key=lambda h: h["val_loss"])
    kept = validate(model, val, loss, torch.device("cpu"), precision=cfg.precision)
    assert kept["loss"] == pytest.approx(best["val_loss"])
    assert weight_average(model, None) is None


def test_ema_of_a_short_run_follows_the_weights_not_the_first_ones():
    """30 steps at decay 0.999: without the warm-up the average would be 97% the initial
    weights (0.999^30)."""
    model = torch.nn.Linear(4, 2)
    ema = weight_average(model, 0.999)
    first = model.weight.detach().clone()
    for _ in range(30):
        with torch.no_grad():
            model.weight.add_(1.0)
        ema.update_parameters(model)
    moved = (ema.module.weight - first).mean().item()  # the weights moved by 1 to 30
    assert 20 < moved < 30


def test_early_stopping_ends_fit_before_the_last_epoch():
    cfg = TrainConfig(epochs=8, lr=3.0, schedule="constant", patience=1)
    result, _ = run_fit(cfg, [EarlyStopping(cfg.patience)])
    assert result.stopped_early and len(result.history) == 4  # epoch 3 was best (see above)
    assert result.history[-1]["epochs_since_best"] == 1


def test_a_diverging_run_stops_with_advice():
    from imclass.errors import ImclassError
    data, norm = tiny_problem()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    batches = Batches(data, 16, norm, channels_last=False)

    def exploding(logits, target):  # what an overflowing loss looks like
        return logits.sum() * float("inf")
    with pytest.raises(ImclassError, match="training diverged at epoch 1.*lower --lr"):
        fit(model, batches, batches, exploding, TrainConfig(epochs=3), torch.device("cpu"))


def test_freed_memory_is_kept_only_where_the_machine_has_room(monkeypatch):
    from imclass import devices

    monkeypatch.setattr(devices, "physical_memory", lambda: 4 * 1024 ** 3)
    assert devices.keep_freed_memory() is False  # 4 GiB: glibc's default stays
    monkeypatch.setattr(devices, "physical_memory", lambda: None)
    assert devices.keep_freed_memory() is False


class HostReads:
    """Counts the loop's reads of tensor values on the host (each a wait for the device on
    a GPU): .item(), bool(), float() and int() (aten._local_scalar_dense), .tolist(),
    .numpy() and .cpu()."""

    def __init__(self, monkeypatch):
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class Scalars(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func is torch.ops.aten._local_scalar_dense.default:
                    counter.count += 1
                return func(*args, **(kwargs or {}))

        self.count, self.mode = 0, Scalars()
        for name in ("tolist", "numpy", "cpu"):
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, **kwargs):
                self.count += 1
                return _original(tensor, *args, **kwargs)
            monkeypatch.setattr(torch.Tensor, name, counted)

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)


def test_an_epoch_reads_nothing_back_from_the_device_batch_by_batch(monkeypatch):
    """The GPU must never wait for the host inside an epoch: with the progress bar shown, the
    weight average, the augmentation and the accuracy counted, an epoch of 16 batches reads
    tensor values back no more often than one of 4 (the epoch's totals, at its end)."""
    import io

    from imclass.config import AUGMENT_PRESETS
    from imclass.data.augment import build_augment
    from imclass.training import Progress, train_one_epoch

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    def reads_in_an_epoch(images: int) -> int:
        torch.manual_seed(0)
        data, norm = tiny_problem()
        data = ImageSet(data.images.repeat(images // 64, 1, 1, 1),
                        data.labels.repeat(images // 64), ("dark", "bright"))
        augment = build_augment(AUGMENT_PRESETS["light"], (1, 8, 8))
        batches = Batches(data, 32, norm, shuffle=True, augment=augment)
        model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4),
                                    torch.nn.Flatten(), torch.nn.Linear(144, 2))
        cfg = TrainConfig(epochs=1, lr=0.1)
        ema = weight_average(model, 0.9)
        optimizer = make_optimizer(model, cfg)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.1, total_steps=64)
        progress = Progress(stream=Terminal(), clock=lambda: 0.0)  # never due for a reading
        progress("epoch_start", {"epoch": 1, "epochs": 1, "steps": len(batches)})
        loss = get_task("multiclass").loss("cross-entropy", 0.0)
        with HostReads(monkeypatch) as reads:
            out = train_one_epoch(model, batches, optimizer, scheduler, loss, cfg,
                                  torch.device("cpu"), progress,
                                  after_step=lambda: ema.update_parameters(model))
        assert out["images_per_s"] > 0 and ema.updates == len(batches)
        return reads.count

    few, many = reads_in_an_epoch(128), reads_in_an_epoch(512)  # 4 and 16 batches
    assert few == many and few <= 4


def test_validation_reads_its_sums_back_once_not_per_batch(monkeypatch):
    def reads_in_validation(images: int) -> int:
        data, norm = tiny_problem()
        data = ImageSet(data.images.repeat(images // 64, 1, 1, 1),
                        data.labels.repeat(images // 64), ("dark", "bright"))
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
        loss = get_task("multiclass").loss("cross-entropy", 0.0)
        with HostReads(monkeypatch) as reads:
            out = validate(model, Batches(data, 32, norm), loss, torch.device("cpu"))
        assert 0 <= out["acc"] <= 1 and out["loss"] > 0
        return reads.count

    assert reads_in_validation(128) == reads_in_validation(512) <= 2  # 4 and 16 batches


def test_the_time_left_prices_each_epoch_to_come_by_its_kind():
    """The photo recipe's first epochs (frozen, on small crops) take a fraction of the later
    ones: the time left counts the epochs still to come of a kind already seen at its own
    pace, and one not seen yet by its cost relative to those seen."""
    import io
    import re

    from imclass.training import Progress, epoch_costs

    cfg = TrainConfig(epochs=6, freeze_epochs=2, early_epochs=3)
    costs = epoch_costs(cfg, side=192, early_side=96)
    assert costs == [0.1, 0.1, 0.25, 1.0, 1.0, 1.0]  # 0.4 frozen, (96/192)^2 on early crops
    assert epoch_costs(TrainConfig(epochs=3), side=96) == [1.0, 1.0, 1.0]
    now = [0.0]
    out = io.StringIO()
    progress = Progress(stream=out, clock=lambda: now[0], costs=costs)
    for epoch, took in enumerate([1.2, 1.2, 3.0, 10.0, 12.0, 10.0], 1):
        progress("epoch_start", {"epoch": epoch, "epochs": 6, "steps": 1})
        now[0] += took
        progress("epoch_end", {"epoch": epoch, "epochs": 6, "train_loss": 1.0,
                               "train_acc": 0.5, "val_loss": 1.0, "val_acc": 0.5,
                               "images_per_s": 1.0, "seconds": took, "improved": False})
    etas = [int(x) for x in re.findall(r"eta (\d+)s", out.getvalue())]
    # after epoch 1 (1.2 s at cost 0.1, 12 s a unit): 1.2 + 0.25 x 12 + 3 x 12; after epoch
    # 4 the fine-tuning epochs at their own pace (10 s, then the mean of 10 and 12)
    assert etas == [40, 39, 36, 20, 11, 0]


def test_the_state_is_written_at_epoch_ends_as_often_as_it_is_cheap(monkeypatch):
    """StateSaver (a fake clock): the first epoch's state is written, then one once the time
    since the last write is 1/WRITE_SHARE times that write's, or --checkpoint-minutes, or
    the run has finished; with --checkpoint-minutes 0 every epoch's end."""
    import time

    from imclass import training
    from imclass.timekeeping import WRITE_SHARE

    clock = {"now": 100.0}
    monkeypatch.setattr(time, "monotonic", lambda: clock["now"])
    written = []

    def write(info):  # a write of 1 s
        clock["now"] += 1.0
        written.append(info["epoch"])

    def epochs(saver, count, seconds, last=None):
        for epoch in range(1, count + 1):
            clock["now"] += seconds
            finished = epoch == last
            if saver.due_at_epoch_end(finished):
                saver.save({"epoch": epoch})
    paced = training.StateSaver(write, minutes=10)
    epochs(paced, 12, seconds=10.0, last=12)
    gap = round(1.0 / WRITE_SHARE / 10)  # epochs of 10 s between writes of 1 s
    assert written == [1, 1 + gap, 1 + 2 * gap, 12] and gap == 5
    written.clear()
    capped = training.StateSaver(write, minutes=0.5)  # 30 s at most between writes
    epochs(capped, 7, seconds=10.0)
    assert written == [1, 4, 7]
    written.clear()
    every = training.StateSaver(write, minutes=0)
    epochs(every, 4, seconds=10.0)
    assert written == [1, 2, 3, 4]
    assert not training.StateSaver(None, minutes=10).due_at_epoch_end(True)
