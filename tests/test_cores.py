"""Sharing the cores: the training run's threads follow what other processes leave free."""

import torch

from imclass import cores


class Timers:
    """Fake clocks: wall seconds, all cores' busy seconds and this process's CPU seconds."""

    def __init__(self):
        self.wall = self.busy = self.own = 0.0

    def advance(self, seconds: float, own_cores: float, other_cores: float) -> None:
        self.wall += seconds
        self.own += seconds * own_cores
        self.busy += seconds * (own_cores + other_cores)


def share(monkeypatch, timers: Timers, lines: list) -> cores.CoreShare:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cores, "usable_cores", lambda: 4)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: lines.append(("threads", n)))
    return cores.CoreShare(lines.append, clock=lambda: timers.wall, busy=lambda: timers.busy,
                           own=lambda: timers.own)


def test_threads_follow_the_cores_others_leave(monkeypatch):
    timers, lines = Timers(), []
    watch = share(monkeypatch, timers, lines)
    timers.advance(3, own_cores=4, other_cores=0.1)  # alone but for a shell: keep 4
    watch("batch_end", {})
    assert watch.threads == 4 and lines == []
    timers.advance(3, own_cores=2, other_cores=2)  # another run takes half the machine
    watch("batch_end", {})
    assert watch.threads == 2 and ("threads", 2) in lines
    assert any("other processes are using 2.0 of the 4 cores" in str(x) for x in lines)
    timers.advance(1, own_cores=2, other_cores=0)  # too soon to measure again
    watch("batch_end", {})
    assert watch.threads == 2
    timers.advance(3, own_cores=2, other_cores=0)  # the other run ended
    watch("epoch_end", {})
    assert watch.threads == 4 and lines[-1] == ("threads", 4)
    timers.advance(3, own_cores=1, other_cores=3.9)  # never fewer than one thread
    watch("batch_end", {})
    assert watch.threads == 1


def test_a_thread_count_the_user_set_is_kept(monkeypatch):
    timers, lines = Timers(), []
    watch = share(monkeypatch, timers, lines)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    kept = cores.CoreShare(lines.append, clock=lambda: timers.wall, busy=lambda: timers.busy,
                           own=lambda: timers.own)
    timers.advance(3, own_cores=2, other_cores=2)
    kept("batch_end", {})
    assert lines == [] and watch.threads == 4


def test_busy_seconds_from_proc_stat(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal, in clock ticks
    stat.write_text("cpu  100 20 30 5000 40 5 5 70 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    monkeypatch.setattr(cores, "PROC_STAT", stat)
    tick = cores.os.sysconf("SC_CLK_TCK")
    assert cores.busy_cpu_seconds() == 160 / tick  # idle, iowait and steal left out
    stat.write_text("garbage")
    assert cores.busy_cpu_seconds() is None
