"""The learning-rate range test (Smith 2015, made popular by fastai): train a few hundred
steps while the learning rate grows exponentially, watch the loss, and suggest the rate where
it falls fastest. The test itself is torch-lr-finder's; it restores the model afterwards.

With `--freeze-epochs`, the test runs in the first stage's shape (the head alone), since that
is the rate `--lr` sets.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from imclass.data.augment import build_augment
from imclass.data.batches import Batches
from imclass.errors import ImclassError
from imclass.finetune import apply_stage, plan_stages
from imclass.plots import pyplot, save_figure
from imclass.training import make_optimizer

SKIP_START, SKIP_END = 10, 5  # steps left out of the suggestion: noisy start, diverging end


def suggest(lrs: list[float], losses: list[float]) -> float:
    """The rate at the steepest fall of the (smoothed) loss against log(lr)."""
    lrs_a, losses_a = np.asarray(lrs), np.asarray(losses)
    if len(lrs_a) > SKIP_START + SKIP_END + 2:
        lrs_a, losses_a = lrs_a[SKIP_START:-SKIP_END], losses_a[SKIP_START:-SKIP_END]
    finite = np.isfinite(losses_a)
    lrs_a, losses_a = lrs_a[finite], losses_a[finite]
    if len(lrs_a) < 3:
        raise ImclassError("the learning-rate range test diverged at once; lower its "
                           "starting rate or check the data")
    slope = np.gradient(losses_a, np.log10(lrs_a))
    return float(lrs_a[int(np.argmin(slope))])


def range_test(setup, model, iterations: int = 100, start_lr: float = 1e-6,
               end_lr: float = 10.0) -> dict:
    """{lrs, losses, suggestion} of the range test on the training split (augmented)."""
    import torch
    from torch_lr_finder import LRFinder, TrainDataLoaderIter

    cfg, splits = setup.cfg, setup.splits
    train_cfg = dataclasses.replace(cfg.train, lr=start_lr)  # cfg's lr may be "auto"
    first = plan_stages(model, train_cfg)[0]
    apply_stage(model, first)
    side = cfg.data.training_side(splits.input_size)
    augment = build_augment(cfg.augment, (splits.train.channels, *splits.train.size), side)
    batches = Batches(splits.train, cfg.train.batch_size, splits.norm, shuffle=True,
                      augment=augment, seed=cfg.train.seed, device=setup.device,
                      drop_last=len(splits.train) > cfg.train.batch_size, size=side)
    optimizer = make_optimizer([(g, start_lr) for g, _ in first.groups], train_cfg)
    loss = setup.task.loss(cfg.train.loss, cfg.train.label_smoothing, setup.balance)
    finder = LRFinder(model, optimizer, lambda z, y: loss(z.float(), y), device=setup.device)
    finder.range_test(TrainDataLoaderIter(batches), end_lr=end_lr, num_iter=iterations,
                      smooth_f=0.05, diverge_th=5)
    finder.reset()  # weights and optimiser as they were
    for p in model.parameters():
        p.requires_grad_(True)
    lrs, losses = finder.history["lr"], finder.history["loss"]
    torch.manual_seed(cfg.train.seed)  # the run that follows starts from the same stream
    return {"lrs": lrs, "losses": losses, "suggestion": suggest(lrs, losses)}


def quiet_output():
    import contextlib
    import io

    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    return stack


def plot(result: dict, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.plot(result["lrs"], result["losses"], color="tab:blue")
    s = result["suggestion"]
    ax.axvline(s, color="tab:red", linestyle="--", label=f"suggestion {s:.2g} (steepest fall)")
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss (smoothed)",
           title="learning-rate range test")
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def find_lr(setup, model, plot_path: Path, log) -> float:
    """Run the test for `imclass train --lr auto`; plot it; return the suggested rate."""
    with quiet_output():  # torch-lr-finder prints and draws a progress bar as it goes
        result = range_test(setup, model)
    plot_path.parent.mkdir(parents=True, exist_ok=True)
    plot(result, plot_path)
    log(f"learning-rate range test: --lr {result['suggestion']:.3g} (steepest fall of the loss "
        f"over {len(result['lrs'])} steps)")
    return result["suggestion"]
