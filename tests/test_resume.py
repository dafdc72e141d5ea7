"""`imclass train --resume`: a run killed with SIGKILL (at a random batch, or in the middle of
writing its state) or stopped with Ctrl-C, then resumed, ends with the same weights (bitwise),
history and metrics as a run never interrupted."""
import csv
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from imclass import cli
from imclass import resume as resume_mod

pytestmark = pytest.mark.slow
FLAGS = ["--subset", "3000", "--epochs", "5", "--quiet"]
TIMING = ("seconds", "images_per_s")  # wall-clock columns of history.csv differ by nature
# the state written after every epoch (not paced by its cost), for the tests that count writes
EVERY_EPOCH = ("--checkpoint-minutes", "0")


def train_cmd(out: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "imclass", "train", *FLAGS, "--out", str(out), *extra]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume") / "whole"
    subprocess.run(train_cmd(out), check=True, capture_output=True)
    return out


def wait_for_epochs(proc, out: Path, count: int) -> None:
    history, deadline = out / "history.csv", time.monotonic() + 120
    while not (history.is_file() and len(history.read_text().splitlines()) > count):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)


def resume(out: Path, *extra: str, where: str = "after epoch") -> None:
    done = subprocess.run([sys.executable, "-m", "imclass", "train", "--resume", str(out),
                           *extra], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming {where}" in done.stderr


def assert_same_run(a: Path, b: Path) -> None:
    for stem in ("best", "last"):
        wa = load_file(str(a / "checkpoints" / f"{stem}.safetensors"))
        wb = load_file(str(b / "checkpoints" / f"{stem}.safetensors"))
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa), f"{stem} weights differ"

    def rows(run):
        with (run / "history.csv").open() as fh:
            return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(fh)]
    assert rows(a) == rows(b) and len(rows(a)) == 5
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (a, b))
    assert ma == mb


def test_killed_at_a_random_batch_then_resumed_is_the_same_run(uninterrupted, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(train_cmd(out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for_epochs(proc, out, 2)
    time.sleep(random.uniform(0, 0.5))  # somewhere in epoch 3 (0.6 s an epoch here)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists() or "test" not in json.loads(
        (out / "metrics.json").read_text())
    resume(out)
    assert_same_run(uninterrupted, out)


def in_epoch_3_after(state_file: Path, batches: int) -> bool:
    try:
        state = json.loads(state_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return state["epoch"] == 2 and (state["mid_epoch"] or {}).get("step", 0) >= batches


def test_killed_in_the_middle_of_an_epoch_resumes_from_that_batch(uninterrupted, tmp_path):
    """--checkpoint-minutes: the state inside an epoch (here after every batch), killed at a
    random batch of epoch 3; the resumed run continues that epoch at the batch it reached."""
    out, every_batch = tmp_path / "mid", ["--checkpoint-minutes", "0.00001"]
    proc = subprocess.Popen(train_cmd(out, *every_batch), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    target, deadline = random.randint(1, 8), time.monotonic() + 120  # 9 batches an epoch
    while not in_epoch_3_after(out / "checkpoints" / "state.json", target):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 2 and state["mid_epoch"]["step"] >= target, state["mid_epoch"]
    resume(out, *every_batch, where=f"in epoch 3 after batch {state['mid_epoch']['step']}")
    assert_same_run(uninterrupted, out)


def test_a_run_with_ema_killed_in_an_epoch_resumes_its_average_too(tmp_path):
    """--ema: the moving average of the weights is part of the state, inside an epoch too."""
    whole, out = tmp_path / "whole-ema", tmp_path / "killed-ema"
    ema, every_batch = ["--ema", "0.9"], ["--checkpoint-minutes", "0.00001"]
    subprocess.run(train_cmd(whole, *ema), check=True, capture_output=True)
    proc = subprocess.Popen(train_cmd(out, *ema, *every_batch), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    target, deadline = random.randint(1, 8), time.monotonic() + 120
    while not in_epoch_3_after(out / "checkpoints" / "state.json", target):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ema_state = resume_mod.load(out / "checkpoints")["ema"]  # (killed before a rename: done)
    assert "n_averaged" in ema_state and ema_state["n_averaged"].item() > 18  # 9 batches/epoch
    resume(out, *every_batch, where="in epoch 3 after batch")
    assert_same_run(whole, out)


KILL_WHILE_WRITING = """
import os, sys
import imclass.resume as r
calls = {"n": 0}
real = r.save_file
def half_then_die(tensors, path):
    calls["n"] += 1
    if calls["n"] == 3:  # the state after epoch 3: half of it on disk, then the process dies
        real(tensors, path)
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
        os._exit(137)
    real(tensors, path)
r.save_file = half_then_die
from imclass.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_killed_while_writing_its_state_then_resumed_is_the_same_run(uninterrupted,
                                                                      tmp_path):
    out = tmp_path / "cut"
    done = subprocess.run([sys.executable, "-c", KILL_WHILE_WRITING,
                           *train_cmd(out, *EVERY_EPOCH)[3:]],
                          capture_output=True, text=True)
    assert done.returncode == 137, done.stderr[-2000:]
    leftovers = list((out / "checkpoints").glob(".state.next.safetensors.*.tmp"))
    assert leftovers, "the half-written state is left under its temporary name"
    assert json.loads((out / "checkpoints" / "state.json").read_text())["epoch"] == 2
    resume(out)
    assert_same_run(uninterrupted, out)


KILL_AFTER = """
import os, sys
import imclass.resume as r
calls = {"n": 0}
real = getattr(r, "{step}")
def step_then_die(*args):
    result = real(*args)
    calls["n"] += 1
    if calls["n"] == 3:  # in the state after epoch 3
        os._exit(137)
    return result
setattr(r, "{step}", step_then_die)
from imclass.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("step, saved_epoch", [("_sha256", 2), ("atomic_write_text", 3)])
def test_killed_between_its_states_tensors_and_json_then_resumed_is_the_same_run(
        uninterrupted, tmp_path, step, saved_epoch):
    """Killed once epoch 3's tensors are written beside epoch 2's (`_sha256`: before its JSON;
    `atomic_write_text`: after it, before the rename): the resumed run goes on from the epoch
    its JSON names, with the tensors that JSON's checksum names."""
    out = tmp_path / step
    script = KILL_AFTER.replace("{step}", step)
    done = subprocess.run([sys.executable, "-c", script, *train_cmd(out, *EVERY_EPOCH)[3:]],
                          capture_output=True, text=True)
    assert done.returncode == 137, done.stderr[-2000:]
    checkpoints = out / "checkpoints"
    assert json.loads((checkpoints / "state.json").read_text())["epoch"] == saved_epoch
    assert (checkpoints / "state.next.safetensors").is_file()
    resume(out)
    assert not (checkpoints / "state.next.safetensors").exists()
    assert_same_run(uninterrupted, out)


def test_a_run_stopped_with_ctrl_c_resumes_to_the_same_run(uninterrupted, tmp_path):
    out = tmp_path / "stopped"
    proc = subprocess.Popen(train_cmd(out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for_epochs(proc, out, 2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    assert json.loads((out / "run.json").read_text())["stopped"]["by"] == "SIGINT"
    resume(out)
    assert_same_run(uninterrupted, out)
    assert json.loads((out / "run.json").read_text())["stopped"] is None


def test_resume_refuses_a_finished_run_a_changed_flag_and_a_folder_without_state(
        uninterrupted, tmp_path, capsys):
    cases = [(["--resume", str(uninterrupted)], "is a finished run: nothing to resume"),
             (["--resume", str(uninterrupted), "--lr", "0.5"], "drop --lr"),
             (["--resume", str(tmp_path / "none")], "holds no run to resume")]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.yaml").write_text((uninterrupted / "config.yaml").read_text())
    cases.append((["--resume", str(tmp_path / "old")], "state.safetensors is missing"))
    for args, message in cases:
        assert cli.main(["train", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
