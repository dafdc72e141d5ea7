"""Figures drawn in two processes: every job runs once, the child's files are there when the
call returns, a child's failure is an error, and one core means one process."""

import os

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


def test_a_failing_job_in_the_child_is_an_error(tmp_path, two_threads):
    def broken():
        raise ValueError("no such figure")

    with pytest.raises(RuntimeError, match="second process failed"):
        run_side_by_side([broken], [writer(tmp_path / "b", "b")])
    assert (tmp_path / "b").is_file()  # this process's half still ran


def test_one_core_draws_everything_here(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_side_by_side([writer(tmp_path / "a", "a")], [writer(tmp_path / "b", "b")])
    finally:
        torch.set_num_threads(before)
    pids = {int(p.read_text().split()[1]) for p in tmp_path.iterdir()}
    assert pids == {os.getpid()}
