"""Figures drawn in two processes: every job runs once, the child's files are there when the
call returns, a child that fails or hangs has its jobs run here, and one core means one
process."""

import os
import time

import pytest
import torch

from imclass import two_processes
from imclass.two_processes import run_side_by_side


def writer(path, text):
    return lambda: path.write_text(f"{text} {os.getpid()}")


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_each_job_runs_once_and_the_first_list_in_another_process(tmp_path, two_threads):
    assert two_processes.can_fork()
    elsewhere = [writer(tmp_path / f"a{i}", "a") for i in range(3)]
    here = [writer(tmp_path / f"b{i}", "b") for i in range(2)]
    run_side_by_side(elsewhere, here)
    pids = {p.name: int(p.read_text().split()[1]) for p in tmp_path.iterdir()}
    assert sorted(pids) == ["a0", "a1", "a2", "b0", "b1"]
    assert {pids[n] for n in ("b0", "b1")} == {os.getpid()}
    assert len({pids[n] for n in ("a0", "a1", "a2")}) == 1
    assert pids["a0"] != os.getpid()


def test_a_job_failing_in_the_child_runs_again_here_and_raises_its_own_error(tmp_path,
                                                                           two_threads):
    parent = os.getpid()

    def broken():
        (tmp_path / f"tried-{os.getpid()}").touch()
        raise ValueError("no such figure")

    with pytest.raises(ValueError, match="no such figure"):
        run_side_by_side([broken], [writer(tmp_path / "b", "b")])
    assert (tmp_path / "b").is_file()  # this process's half ran
    tries = sorted(p.name for p in tmp_path.glob("tried-*"))
    assert len(tries) == 2 and f"tried-{parent}" in tries  # the child's, then here


def test_a_child_that_hangs_is_killed_and_its_jobs_run_here(tmp_path, two_threads):
    parent = os.getpid()

    def hangs_elsewhere():
        if os.getpid() != parent:
            time.sleep(600)
        (tmp_path / "a").write_text(str(os.getpid()))

    start = time.monotonic()
    run_side_by_side([hangs_elsewhere], [writer(tmp_path / "b", "b")], timeout_s=1.0)
    assert time.monotonic() - start < 60
    assert (tmp_path / "a").read_text() == str(parent)


def test_one_core_draws_everything_here(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_side_by_side([writer(tmp_path / "a", "a")], [writer(tmp_path / "b", "b")])
    finally:
        torch.set_num_threads(before)
    pids = {int(p.read_text().split()[1]) for p in tmp_path.iterdir()}
    assert pids == {os.getpid()}


def test_a_process_using_cuda_draws_everything_here(tmp_path, two_threads, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert not two_processes.can_fork()
    run_side_by_side([writer(tmp_path / "a", "a")], [writer(tmp_path / "b", "b")])
    assert {int(p.read_text().split()[1]) for p in tmp_path.iterdir()} == {os.getpid()}
