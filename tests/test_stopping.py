"""Stopping a run on purpose: Ctrl-C (SIGINT) or SIGTERM ends training after the current
batch, and the run keeps and evaluates what it learned; a second signal stops at once and
still leaves no half-written file."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def start_training(out: Path, epochs: int = 30) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "imclass", "train", "--subset", "3000",
                             "--epochs", str(epochs), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_epochs(proc, out: Path, count: int, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    history = out / "history.csv"
    while not (history.is_file() and len(history.read_text().splitlines()) > count):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, f"{count} epochs did not finish in {seconds} s"
        time.sleep(0.1)


def read_stderr_until(proc, text: str) -> str:
    """The process's stderr up to and including the first line that holds `text`."""
    lines = []
    while not lines or text not in lines[-1]:
        line = proc.stderr.readline()
        assert line, "".join(lines)[-2000:]  # the process ended without printing `text`
        lines.append(line)
    return "".join(lines)


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_after_the_batch_and_the_run_keeps_what_it_learned(tmp_path, signum,
                                                                         code):
    out = tmp_path / "run"
    proc = start_training(out)
    wait_for_epochs(proc, out, 2)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == code, stderr[-2000:]
    name = signal.Signals(signum).name
    assert f"stopped by the user ({name}) at epoch " in stderr and " of 30" in stderr
    run = json.loads((out / "run.json").read_text())
    stopped = run["stopped"]
    assert (stopped["by"], stopped["epochs"]) == (name, 30)
    assert run["epochs_run"] == stopped["epoch"] - 1 >= 2  # the cut epoch is not counted
    assert len((out / "history.csv").read_text().splitlines()) == run["epochs_run"] + 1
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert test["count"] == 10_000 and test["accuracy"] > 0.3
    for stem in ("best", "last"):
        assert (out / "checkpoints" / f"{stem}.safetensors").is_file()
    assert json.loads((out / "checkpoints" / "last.json").read_text())["metrics"]["epoch"] == \
        run["epochs_run"]
    assert f"Stopped by the user ({name}) at epoch {stopped['epoch']} of 30" in \
        (out / "report.html").read_text()
    assert stdout.strip() == str(out / "report.html")
    assert not list(out.rglob("*.tmp"))


def test_a_second_ctrl_c_stops_at_once_leaving_no_half_written_file(tmp_path):
    out = tmp_path / "run"
    proc = start_training(out)
    wait_for_epochs(proc, out, 1)
    # the epoch's row is written before its checkpoint: a second signal between the two would
    # (rightly) leave no last.json at all, so wait for the checkpoint too
    last = out / "checkpoints" / "last.json"
    deadline = time.monotonic() + 60
    while not last.is_file():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    # Two signals that arrive while the main thread is inside one torch call reach Python's
    # handler as one, so the second goes only once the first has been handled (its message).
    seen = read_stderr_until(proc, "stopping after this batch")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=180)
    stderr = seen + stderr
    assert proc.returncode == 130, stderr[-2000:]
    assert "imclass: interrupted" in stderr and "Traceback" not in stderr
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*.tmp"))
    json.loads((out / "checkpoints" / "last.json").read_text())  # whole, not cut
