"""Data-parallel training under `torchrun` (or `imclass train --nproc N`): one process per
device, gloo on CPUs and NCCL on GPUs, PyTorch's DistributedDataParallel for the gradients.

The run is the single-process run cut into shards: every rank draws the same shuffled order,
each global batch of `--batch-size` images is split into one equal slice per rank, and DDP's
averaged gradient is then the gradient of the whole batch (so the learning rate keeps its
meaning). BatchNorm statistics are synchronised across ranks (`--sync-bn`), validation and
test images are split without padding (each counts once) and gathered or summed back.
Rank 0 alone writes the run folder; the others run silently in a scratch folder.

A process launched without torchrun's environment (WORLD_SIZE unset or 1) gets `SINGLE`, and
every helper here is then a no-op, so the training code has one path.
"""

from __future__ import annotations

import copy
import datetime
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from imclass.errors import ConfigError, ImclassError

# How long a collective waits for a rank before the job fails (s): a rank that died or hangs
# ends the run with an error instead of a wait without end. torchrun's agent usually notices
# a dead worker and stops the others within seconds; this bounds the cases it cannot see.
TIMEOUT_S = 300


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """This rank's device: its own GPU (LOCAL_RANK) under CUDA."""
        if self.active and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def shard(self, n: int) -> np.ndarray:
        """This rank's disjoint share of n items (every world-th), no padding."""
        return np.arange(self.rank, n, self.world)


SINGLE = Dist()


def from_environment(device: torch.device) -> Dist:
    """Join torchrun's process group when launched by it (RANK, WORLD_SIZE, LOCAL_RANK set),
    with the backend for `device`; otherwise SINGLE."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    import torch.distributed as td

    die_with_parent()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    if not td.is_initialized():
        td.init_process_group(backend, timeout=datetime.timedelta(seconds=TIMEOUT_S))
    return Dist(rank, world, local_rank, backend)


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this rank when its launcher dies: a killed torchrun agent (or
    imclass train --nproc) otherwise leaves its workers training on as orphans."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, 9)
    except (OSError, AttributeError):  # not Linux: nothing to ask
        pass


def close(dist: Dist) -> None:
    if dist.active:
        import torch.distributed as td
        if td.is_initialized():
            td.destroy_process_group()


def barrier(dist: Dist) -> None:
    if dist.active:
        import torch.distributed as td
        td.barrier()


def all_sum(dist: Dist, values: list[float]) -> list[float]:
    """The sums over ranks of a few numbers (in float64: sums of per-image losses)."""
    if not dist.active:
        return values
    import torch.distributed as td
    t = torch.tensor(values, dtype=torch.float64)
    if dist.backend == "nccl":
        t = t.cuda()
    td.all_reduce(t)
    return t.cpu().tolist()


def any_rank(dist: Dist, flag: bool) -> bool:
    """True on every rank when it is true on one (a Ctrl-C seen by one rank stops all at the
    same batch: a rank that stopped alone would leave the others waiting in a collective)."""
    return all_sum(dist, [float(flag)])[0] > 0 if dist.active else flag


def gather_objects(dist: Dist, obj) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if not dist.active:
        return [obj]
    import torch.distributed as td
    out: list = [None] * dist.world
    td.all_gather_object(out, obj)
    return out


def broadcast(dist: Dist, obj):
    """Rank 0's `obj` on every rank."""
    if not dist.active:
        return obj
    import torch.distributed as td
    box = [obj]
    td.broadcast_object_list(box, src=0)
    return box[0]


def gather_in_order(dist: Dist, local: np.ndarray, n: int) -> np.ndarray:
    """Rows computed by each rank for its `shard(n)`, put back in their original order."""
    if not dist.active:
        return local
    parts = gather_objects(dist, local)
    out = np.empty((n, *parts[0].shape[1:]), dtype=parts[0].dtype)
    for rank, part in enumerate(parts):
        out[rank::dist.world] = part
    return out


def first_difference(facts_by_rank: list[dict]) -> str | None:
    """The first fact on which a rank differs from rank 0, in words, or None."""
    for rank, facts in enumerate(facts_by_rank[1:], start=1):
        for key, value in facts_by_rank[0].items():
            if facts.get(key) != value:
                return (f"rank {rank} has a different {key} than rank 0 ({facts.get(key)!r} "
                        f"vs {value!r})")
    return None


def check_same(dist: Dist, facts: dict) -> None:
    """Refuse to start when the ranks do not run the same thing (another imclass version,
    config or dataset on one machine): their gradients would be averaged over nonsense."""
    difference = first_difference(gather_objects(dist, facts))
    if difference:
        raise ConfigError(f"the processes of this distributed run differ: {difference}; start "
                          "every rank with the same imclass, command and data")


def check_batch(dist: Dist, batch_size: int, train_images: int) -> int:
    """This rank's share of each global batch of `batch_size` images."""
    if not dist.active:
        return batch_size
    if batch_size % dist.world:
        raise ConfigError(f"--batch-size {batch_size} is the global batch and must divide "
                          f"evenly among the {dist.world} processes; use a multiple of "
                          f"{dist.world}")
    if train_images < batch_size:
        raise ConfigError(f"{train_images} training images are fewer than one global batch "
                          f"of {batch_size} for {dist.world} processes; lower --batch-size")
    return batch_size // dist.world


class SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) that autograd can go through: the backward sums the gradients too.
    (torch.distributed.nn.functional.all_reduce does the same, but is deprecated and warns
    on every call.)"""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group) -> torch.Tensor:
        import torch.distributed as td
        ctx.group = group
        out = tensor.clone(memory_format=torch.contiguous_format)
        td.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        import torch.distributed as td
        out = grad.contiguous().clone()
        td.all_reduce(out, group=ctx.group)
        return out, None


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose batch statistics are those of the whole global batch, on CPUs.

    Written here because torch.nn.SyncBatchNorm runs on GPUs only (its kernels,
    batch_norm_stats and friends, have no CPU implementation). Per channel, each rank sums
    x and x^2 and counts its values; one differentiable all-reduce
    (SumOverRanks, whose backward all-reduces the gradients) gives the global mean and
    variance, so forward and backward equal those of BatchNorm over the whole batch in one
    process."""

    group = None  # the process group its statistics are summed over (see sync_batchnorm)

    def __deepcopy__(self, memo: dict) -> "CpuSyncBatchNorm":
        """A copy (the weights' moving average, --ema, is one) sums over the same process
        group: a group cannot be copied or pickled, so the copy shares it. The rest is copied
        as any module's is."""
        memo[id(self.group)] = self.group
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        copied.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return copied

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as td
        if not (self.training and td.is_available() and td.is_initialized()
                and td.get_world_size() > 1):
            return super().forward(x)
        channels = x.shape[1]
        # sums in float64: the variance as E[x^2] - E[x]^2 would lose digits in float32. The
        # squares too: summing float32 squares into float64 left 3 steps 9e-5 off one
        # process's weights, against 1.2e-7 this way (tests/test_distributed.py)
        x64 = x.double()
        count = torch.tensor([x.numel() / channels], dtype=torch.float64)
        stats = SumOverRanks.apply(torch.cat([x64.sum((0, 2, 3)), (x64 * x64).sum((0, 2, 3)),
                                              count]), self.group)
        total = stats[-1]
        mean64 = stats[:channels] / total
        var = (stats[channels:2 * channels] / total - mean64 * mean64).to(x.dtype)
        mean = mean64.to(x.dtype)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else \
                    1.0 / float(self.num_batches_tracked)
                unbiased = var * total / (total - 1).clamp(min=1)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean)
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased)
        shape = (1, channels, 1, 1)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """The model with every BatchNorm2d synchronised across ranks (PyTorch's on GPUs, ours on
    CPUs); the state dict keys and values are unchanged."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    import torch.distributed as td
    # A group of its own: in the backward pass DDP's gradient all-reduces run asynchronously
    # on the default group, and BatchNorm's would interleave with them differently on each
    # rank (seen: runs off by 1e-2 after 15 steps, at random steps, exact without).
    _convert(model, device, td.new_group(backend="gloo"))
    return model


def _convert(model: nn.Module, device: torch.device, group) -> None:
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            sync = CpuSyncBatchNorm(child.num_features, child.eps, child.momentum,
                                    child.affine, child.track_running_stats)
            sync.group = group
            sync.load_state_dict(child.state_dict())
            sync.train(child.training)
            for p_new, p_old in zip(sync.parameters(), child.parameters()):
                p_new.requires_grad_(p_old.requires_grad)
            setattr(model, name, sync.to(device))
        else:
            _convert(child, device, group)


def memory_format(dist: Dist, device: torch.device, channels_last: bool = True
                  ) -> torch.memory_format:
    """The layout of images and weights: channels_last when asked (faster convolutions),
    except in a distributed run on CPUs. There, under channels_last, a rank's half batch did
    not reproduce the whole batch's gradient (off by up to 13% in a first-step check of our
    CNN; oneDNN picks other kernels per batch size and storage offset, cause not pinned down),
    while in the default layout a 2-process epoch equals one process's to 1e-7."""
    if dist.active and device.type == "cpu" or not channels_last:
        return torch.contiguous_format
    return torch.channels_last


def wrapper(dist: Dist, device: torch.device):
    """`wrap(model)` for the training loop: DistributedDataParallel over the parameters that
    train now (called again after each fine-tuning stage changes them), or the model itself."""
    def wrap(model: nn.Module) -> nn.Module:
        if not dist.active:
            return model
        from torch.nn.parallel import DistributedDataParallel
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    return wrap


def launch(nproc: int, argv: list[str]) -> int:
    """`imclass train --nproc N`: torchrun's elastic agent on this machine, starting N
    processes of `imclass <argv>` (argv without --nproc); returns the job's exit code, and
    names the rank that failed first in one line when one does."""
    import sys
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    import logging
    # the agent's own log lines (which worker it stops, how) would bury the one line below
    for name in ["torch.distributed.elastic", *logging.root.manager.loggerDict]:
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    # torchrun's rule: without OMP_NUM_THREADS, each process gets its share of the cores
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc,
                          run_id=str(uuid.uuid4()), rdzv_backend="c10d",
                          rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.5)
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "imclass", *argv)
    except ChildFailedError as exc:
        failure = rank_failure(exc.failures, nproc)
        print(f"imclass: error: {failure}", file=sys.stderr)
        return failure.exit_code
    except SignalException as exc:  # Ctrl-C or SIGTERM: the workers got it too and stopped
        return 128 + int(exc.sigval)
    return 0


def rank_failure(failures: dict, world: int) -> ImclassError:
    """torchrun's failures ({rank: ProcessFailure}) as one sentence naming the rank that
    failed first and how; its exit code is that rank's (1 for a signal)."""
    import signal as signal_mod

    if not failures:
        return ImclassError("the distributed run failed")
    # the first to fail on its own: the agent SIGTERMs the others once one has failed
    stopped_by_agent = -int(signal_mod.SIGTERM)
    rank, failure = min(failures.items(), key=lambda kv: (
        kv[1].exitcode == stopped_by_agent, kv[1].timestamp, kv[0]))
    code = failure.exitcode
    how = (f"was killed by {signal_mod.Signals(-code).name}" if code < 0
           else f"exited with code {code}")
    error = ImclassError(f"rank {rank} of {world} {how} and the other processes were "
                         "stopped; a run folder keeps its last complete checkpoint and state "
                         "(imclass train --resume RUN_DIR --nproc N continues it)")
    error.exit_code = code if code > 0 else 1
    return error
