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
