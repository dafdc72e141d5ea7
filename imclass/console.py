"""What a run says as it goes: one line at a time on stderr, so stdout stays for results."""

from __future__ import annotations

import sys
from typing import Callable

Log = Callable[[str], None]


def make_log(quiet: bool) -> Log:
    def log(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr, flush=True)
    return log


class StageClock:
    """How long each stage of a run took (data, training, evaluation, report), in seconds;
    printed as it goes with --verbose, kept in run.json always."""

    def __init__(self, log: Log, verbose: bool = False):
        import time
        self.log, self.verbose, self.now = log, verbose, time.perf_counter
        self.mark, self.seconds = self.now(), {}

    def done(self, stage: str) -> None:
        now = self.now()
        self.seconds[stage] = round(now - self.mark, 3)
        self.mark = now
        if self.verbose:
            self.log(f"stage {stage}: {self.seconds[stage]:.1f}s")
