"""The training step on one CUDA GPU, part by part (issue 28): augmentation alone, the model's
step eager and with CUDA graphs, a whole epoch's images/s, whether the graphed step computes
what the eager one does, host synchronisations inside an epoch, the augmentation's operation
count at batch 64 and 1,024, a profiler summary of one epoch (kernel launches per step,
the largest host costs), and the photo recipe's EfficientNet-Lite0 fine-tuning images/s.

    .venv/bin/python bench/gpu_step.py [--out runs/gpu] [--images 60000] [--photos 4096]

Synthetic Fashion-MNIST-shaped data (uint8 28x28, 10 classes) on the GPU: this measures the
step, not the data. Prints Markdown tables; writes OUT/profile.txt. `--cpu-dry-run` runs every
part on the CPU over 3,000 images, with recording replaced by the plain call and without the
CUDA-only checks: to find a script's mistakes before a GPU's time is spent on them.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from imclass.config import AUGMENT_PRESETS, ModelConfig, TrainConfig  # noqa: E402
from imclass.cuda_graphs import GraphedForward  # noqa: E402
from imclass.data.augment import build_augment  # noqa: E402
from imclass.data.batches import Batches, Normalization  # noqa: E402
from imclass.data.images import ImageSet  # noqa: E402
from imclass.finetune import apply_stage, plan_stages  # noqa: E402
from imclass.models import build_model  # noqa: E402
from imclass.tasks import get_task  # noqa: E402
from imclass.training import make_optimizer, make_schedule, train_one_epoch  # noqa: E402

CUDA = torch.device("cuda")  # the CPU under --cpu-dry-run
MODELS = {  # name: (model config, batch, augmentation preset + erasing)
    "cnn (default)": (ModelConfig(), 256, ("fashion", 0.0)),
    "rescnn (long)": (ModelConfig(name="rescnn", widths=(32, 64, 128, 256),
                                  depths=(0, 1, 0, 1)), 256, ("fashion", 0.5)),
    "ResNet-9 width": (ModelConfig(name="rescnn", widths=(64, 128, 256, 512),
                                   depths=(0, 1, 0, 1)), 512, ("fashion", 0.5)),
}


def synthetic(images: int) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (images, 1, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (images,), generator=g)
    return ImageSet(pixels, labels, tuple(str(i) for i in range(10)))


def synchronize() -> None:
    if CUDA.type == "cuda":
        torch.cuda.synchronize()


def cuda_ms(fn, repeats: int = 50, warmup: int = 10) -> float:
    for _ in range(warmup):
        fn()
    synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize()
    return (time.perf_counter() - start) / repeats * 1000


def setup(model_cfg: ModelConfig, batch: int, augment: tuple[str, float], data: ImageSet,
          graphs: bool, seed: int = 0):
    torch.manual_seed(seed)
    preset, erase = augment
    aug_cfg = dataclasses.replace(AUGMENT_PRESETS[preset], erase_p=erase, erase_area=0.25)
    aug = build_augment(aug_cfg, (1, 28, 28))
    norm = Normalization((0.286,), (0.353,))
    batches = Batches(data, batch, norm, shuffle=True, augment=aug, seed=seed, device=CUDA,
                      drop_last=True)
    model = build_model(model_cfg, 1, 10).to(CUDA, memory_format=torch.channels_last)
    cfg = TrainConfig(lr=0.2 * batch / 256, precision="auto")
    optimizer = make_optimizer(model, cfg)
    scheduler = make_schedule(optimizer, cfg, 10 * len(batches))
    net = GraphedForward(model) if graphs else model
    loss = get_task("multiclass").loss("cross-entropy", 0.1)
    return net, batches, optimizer, scheduler, loss, cfg, aug


def epoch(parts) -> dict:
    net, batches, optimizer, scheduler, loss, cfg, _ = parts
    return train_one_epoch(net, batches, optimizer, scheduler, loss, cfg, CUDA)


def step_table(data: ImageSet) -> None:
    print("| model | batch | augmentation ms | epoch images/s eager | with CUDA graphs | "
          "first epoch s (eager / graphs) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (model_cfg, batch, augment) in MODELS.items():
        parts = {g: setup(model_cfg, batch, augment, data, g) for g in (False, True)}
        x = torch.rand(batch, 1, 28, 28, device=CUDA)
        aug_ms = cuda_ms(lambda: parts[False][6](x))
        first = {}
        for g in (False, True):
            synchronize()
            start = time.perf_counter()
            epoch(parts[g])
            synchronize()
            first[g] = time.perf_counter() - start
        speed = {g: statistics.median(epoch(parts[g])["images_per_s"] for _ in range(3))
                 for g in (False, True)}
        print(f"| {name} | {batch} | {aug_ms:.2f} | {speed[False]:,.0f} | {speed[True]:,.0f} | "
              f"{first[False]:.1f} / {first[True]:.1f} |")


def lite0_fine_tuning(photos: int) -> None:
    """The photo recipe's fine-tuning step (issue 28: >= 2,000 training images/s at 224 px):
    EfficientNet-Lite0 (random weights; the arithmetic is the same) on synthetic 3x256x256
    photos, the photo preset's random crops out at 224 px, BatchNorms frozen, the top 5 layer
    groups and then every group training, AdamW, batch 128, bf16 autocast, eager."""
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (photos, 3, 256, 256), dtype=torch.uint8, generator=g)
    data = ImageSet(pixels, torch.randint(0, 3, (photos,), generator=g), ("a", "b", "c"))
    aug = build_augment(AUGMENT_PRESETS["photo"], (3, 256, 256), 224)
    norm = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    batch = min(128, photos // 2)
    batches = Batches(data, batch, norm, shuffle=True, augment=aug, seed=0, device=CUDA,
                      drop_last=True, size=224, channels_last=True)
    print(f"\n| efficientnet_lite0 at 224 px, batch {batch} | training images/s (median of 3 "
          "epochs after one) |\n|---|---:|")
    for unfreeze in ("last-5", "all"):
        torch.manual_seed(0)
        model = build_model(ModelConfig(name="efficientnet_lite0"), 3, 3).to(
            CUDA, memory_format=torch.channels_last)
        cfg = TrainConfig(lr=3e-3, fine_tune_lr=1e-3, lr_mult=0.7, optimizer="adamw",
                          freeze_epochs=1, epochs=5, unfreeze=unfreeze, freeze_bn=True,
                          precision="auto", weight_decay=0.01)
        stage = plan_stages(model, cfg)[-1]
        apply_stage(model, stage)
        optimizer = make_optimizer(stage.groups, cfg)
        scheduler = make_schedule(optimizer, cfg, 10 * len(batches))
        loss = get_task("multiclass").loss("cross-entropy", 0.0)
        parts = (model, batches, optimizer, scheduler, loss, cfg, aug)
        epoch(parts)  # cuDNN's choices
        speed = statistics.median(epoch(parts)["images_per_s"] for _ in range(3))
        print(f"| fine-tuning {unfreeze} | {speed:,.0f} |")


def graphs_agree(data: ImageSet) -> None:
    """The same 30 steps from the same weights and batches, eager and graphed: the losses."""
    losses = {}
    for g in (False, True):
        net, batches, optimizer, scheduler, loss, cfg, _ = setup(
            ModelConfig(dropout=0.0), 256, ("none", 0.0), data, g, seed=1)
        seen = []
        for step, (x, y) in enumerate(batches):
            if step == 30:
                break
            net.train()
            with torch.autocast(CUDA.type, torch.bfloat16, cache_enabled=False):
                out = loss(net(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            out.backward()
            optimizer.step()
            scheduler.step()
            seen.append(out.item())
        losses[g] = seen
    gap = max(abs(a - b) for a, b in zip(losses[False], losses[True]))
    print(f"\ngraphed vs eager, 30 steps of the default cnn (no dropout): loss step 1 "
          f"{losses[False][0]:.4f} / {losses[True][0]:.4f}, step 30 {losses[False][-1]:.4f} / "
          f"{losses[True][-1]:.4f}, largest gap {gap:.4f} (bf16: a few 1e-3 is rounding)")


def syncs_in_an_epoch(data: ImageSet) -> None:
    parts = setup(ModelConfig(), 256, ("fashion", 0.5), data, True)
    epoch(parts)  # recorded, cuDNN tuned
    if CUDA.type != "cuda":
        return
    torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        epoch(parts)
    torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    print(f"\nhost synchronisations in one epoch ({len(parts[1])} steps): {len(syncs)}")
    for w in syncs[:5]:
        print(f"  {w.filename}:{w.lineno}: {str(w.message)[:100]}")


def operation_counts() -> None:
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    print("\n| preset | aten ops at batch 64 | at 1,024 |\n|---|---:|---:|")
    for preset in ("fashion", "light", "strong"):
        aug = build_augment(AUGMENT_PRESETS[preset], (1, 28, 28))
        counts = []
        for n in (64, 1024):
            x = torch.rand(n, 1, 28, 28, device=CUDA)
            Count.calls = 0
            with Count():
                aug(x)
            counts.append(Count.calls)
        print(f"| {preset} | {counts[0]} | {counts[1]} |")


def profile(data: ImageSet, out: Path) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    parts = setup(ModelConfig(), 256, ("fashion", 0.0), data, True)
    epoch(parts)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if CUDA.type == "cuda"
                                           else [])
    with torch_profile(activities=activities) as prof:
        epoch(parts)
        synchronize()
    steps = len(parts[1])
    events = prof.key_averages()
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cudaGraphLaunch",
                                                        "cuLaunchKernel", "cudaLaunchKernelExC"))
    table = events.table(sort_by="self_cpu_time_total", row_limit=25)
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile.txt").write_text(table)
    print(f"\nprofiler, one epoch of the default with CUDA graphs: {launches} launches, "
          f"{launches / steps:.1f} per step; the top host costs are in {out / 'profile.txt'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/gpu"))
    parser.add_argument("--images", type=int, default=60000)
    parser.add_argument("--photos", type=int, default=4096,
                        help="synthetic 256 px photos for the lite0 fine-tuning step")
    parser.add_argument("--cpu-dry-run", action="store_true")
    args = parser.parse_args()
    global CUDA
    if args.cpu_dry_run:
        CUDA, args.images, args.photos = torch.device("cpu"), 3000, 64
        torch.cuda.make_graphed_callables = lambda module, sample: module
        print("dry run on the CPU: figures mean nothing\n")
    else:
        assert torch.cuda.is_available(), "bench/gpu_step.py: no CUDA GPU is visible"
        torch.backends.cudnn.benchmark = True
        print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}\n")
    data = synthetic(args.images)
    for part in (step_table, graphs_agree, syncs_in_an_epoch):
        part(data)
    operation_counts()
    profile(data, args.out)
    lite0_fine_tuning(args.photos)


if __name__ == "__main__":
    main()
