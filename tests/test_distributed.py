"""Data-parallel training (imclass.distributed): `imclass train --nproc 2` on CPUs (gloo)
writes one run folder with a single-process run's files and parameters, counts each test
image once, refuses ranks that differ, and stops the whole job when one rank dies."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from imagedata import folder_dataset
from imclass import distributed
from imclass.errors import ConfigError

# No augmentation and no dropout: the random streams of one and two processes differ by
# design; the default layout: see distributed.memory_format. Three optimisation steps: beyond
# a few, a rounding-level difference can flip a ReLU or a max-pool's pick and grow. fp32:
# bf16 (what a CPU with AMX or AVX512-BF16 trains in) rounds each rank's half-batch sums apart by 1e-2.
SAME_MATH = ["--subset", "300", "--epochs", "1", "--batch-size", "64", "--augment", "none",
             "--dropout", "0", "--channels-last", "false", "--precision", "fp32", "--quiet"]


def imclass(*args, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imclass", *args], capture_output=True,
                          text=True, env=env, **kw)


def files_of(run: Path) -> set[str]:
    return {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}


pytestmark = pytest.mark.slow


def test_two_processes_write_one_run_with_a_single_process_runs_files_and_weights(tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}  # where the other rank keeps its files
    single, double = tmp_path / "runs" / "single", tmp_path / "runs" / "double"
    assert imclass("train", *SAME_MATH, "--out", str(single)).returncode == 0
    done = imclass("train", *SAME_MATH, "--nproc", "2", "--out", str(double), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == str(double / "report.html")  # one rank speaks
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["double", "single"]
    assert not list(scratch.glob("imclass-rank*")), "the other rank's scratch is removed"
    assert files_of(double) == files_of(single)
    assert json.loads((double / "run.json").read_text())["processes"] == 2
    a = load_file(str(single / "checkpoints" / "last.safetensors"))
    b = load_file(str(double / "checkpoints" / "last.safetensors"))
    weights = [k for k in a if "running" not in k and "num_batches" not in k]
    assert max((a[k] - b[k]).abs().max().item() for k in weights) < 1e-5
    history = [(single / "history.csv").read_text().splitlines()[1].split(",")[:6],
               (double / "history.csv").read_text().splitlines()[1].split(",")[:6]]
    assert [float(v) for v in history[0]] == pytest.approx([float(v) for v in history[1]],
                                                          abs=1e-4)


def test_each_test_image_counts_once_when_the_ranks_cannot_split_it_evenly(tmp_path):
    """21 test images over 2 ranks: no padding, no duplicate, none lost; the decode cache is
    built by one rank while the other waits for it."""
    data = folder_dataset(tmp_path / "pets", n_train=20, n_test=7)
    out = tmp_path / "run"
    done = imclass("train", "--data", str(data), "--nproc", "2", "--model", "cnn", "--epochs",
                   "2", "--batch-size", "16", "--lr", "0.05", "--quiet", "--out", str(out),
                   "--cache-dir", str(tmp_path / "cache"))
    assert done.returncode == 0, done.stderr[-3000:]
    # a folder's recipe keeps the weights' moving average: a copy of the synchronised model
    assert "weight average 0.999" in json.loads((out / "run.json").read_text())["recipe"]["line"]
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert test["count"] == 21 and sum(map(sum, test["confusion_matrix"])) == 21
    assert sum(m["support"] for m in test["per_class"].values()) == 21
    arrays = list((tmp_path / "cache" / "decoded").glob("*.npy"))
    assert len(arrays) == 2  # train and test, each decoded once


def rank_pid(launcher: int, rank: int) -> int | None:
    """The pid of a worker of `launcher` (torchrun's agent) whose RANK is `rank`."""
    for child in Path("/proc").glob("[0-9]*"):
        try:
            stat = (child / "stat").read_text().split()
            environ = (child / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[3]) == launcher and f"RANK={rank}".encode() in environ:
            return int(child.name)
    return None


def test_a_killed_rank_stops_the_whole_job_in_bounded_time_naming_it(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "imclass", "train", "--nproc", "2",
                             "--subset", "3000", "--epochs", "30", "--quiet", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not ((out / "history.csv").is_file()
               and len((out / "history.csv").read_text().splitlines()) > 1):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    victim = rank_pid(proc.pid, 1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert time.monotonic() - killed_at < 60  # the stated bound (docs/distributed.md)
    assert "rank 1 of 2 was killed by SIGKILL" in err, err[-2000:]
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["epoch"] >= 1  # the last complete state is still there to resume from


def test_ctrl_c_stops_every_rank_after_the_same_batch_and_finishes_the_run(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "imclass", "train", "--nproc", "2",
                             "--subset", "3000", "--epochs", "30", "--quiet", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 180
    while not ((out / "history.csv").is_file()
               and len((out / "history.csv").read_text().splitlines()) > 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: every process
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert err.count("stopping after this batch") == 1 and "Traceback" not in err
    stopped = json.loads((out / "run.json").read_text())["stopped"]
    assert stopped["by"] == "SIGINT" and (out / "report.html").is_file()


def test_ranks_that_differ_are_refused_by_name():
    same = {"imclass version": "0.1.0", "config": "ab12", "dataset": "10/2/3 images"}
    assert distributed.first_difference([same, dict(same)]) is None
    other = {**same, "config": "ff00"}
    assert distributed.first_difference([same, dict(same), other]) == (
        "rank 2 has a different config than rank 0 ('ff00' vs 'ab12')")
    distributed.check_same(distributed.SINGLE, same)  # one process: nothing to compare


def test_a_global_batch_must_divide_among_the_ranks():
    two = distributed.Dist(rank=0, world=2)
    assert distributed.check_batch(two, 64, 1000) == 32
    with pytest.raises(ConfigError, match="use a multiple of 2"):
        distributed.check_batch(two, 63, 1000)
    with pytest.raises(ConfigError, match="fewer than one global batch"):
        distributed.check_batch(two, 64, 40)
    assert list(distributed.Dist(rank=1, world=2).shard(5)) == [1, 3]


def test_the_launcher_names_the_rank_that_failed_first():
    failures = {0: SimpleNamespace(exitcode=-int(signal.SIGTERM), timestamp=5),
                1: SimpleNamespace(exitcode=2, timestamp=6)}
    error = distributed.rank_failure(failures, 2)
    assert str(error).startswith("rank 1 of 2 exited with code 2") and error.exit_code == 2


def test_cpu_sync_batchnorm_is_batchnorm_without_a_process_group():
    bn, sync = torch.nn.BatchNorm2d(4), distributed.CpuSyncBatchNorm(4)
    sync.load_state_dict(bn.state_dict())
    x = torch.randn(8, 4, 5, 5)
    assert torch.allclose(sync(x), bn(x))
    assert torch.allclose(sync.running_var, bn.running_var)


class Uncopyable:
    """Stands in for a process group: neither copied nor pickled."""

    def __reduce_ex__(self, protocol):
        raise TypeError("cannot pickle a process group")


def test_a_copy_of_a_synchronised_model_shares_its_process_group():
    """The weights' moving average (--ema, set by a folder's recipe) starts as a deep copy of
    the model; on a distributed CPU run that model holds CpuSyncBatchNorm layers."""
    group = Uncopyable()
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), distributed.CpuSyncBatchNorm(4))
    model[1].group = group
    average = torch.optim.swa_utils.AveragedModel(model, use_buffers=True)
    copied = average.module[1]
    assert type(copied) is distributed.CpuSyncBatchNorm and copied.group is group
    assert copied.weight is not model[1].weight and copied.running_mean is not \
        model[1].running_mean
    assert torch.equal(copied.weight, model[1].weight)
    copied.weight.data.add_(1)  # the copy's tensors are its own
    assert not torch.equal(copied.weight, model[1].weight)


def test_two_processes_train_to_one_budget(tmp_path):
    """--budget with --nproc 2: rank 0's plan for both, one share of time for both (a rank
    whose schedule ran ahead would stop alone and leave the other waiting), on time."""
    out = tmp_path / "run"
    started = time.monotonic()
    done = imclass("train", "--subset", "600", "--budget", "40s", "--nproc", "2", "--quiet",
                   "--out", str(out))
    wall = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert run["processes"] == 2 and run["budget"]["seconds"] == 40
    assert run["budget"]["ended_by"] in ("the clock", "its planned epochs", "early stopping")
    assert wall <= 40 + 20, f"a 40 s budget over two processes took {wall:.0f} s"
