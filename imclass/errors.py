"""The one exception type a user sees: a sentence saying what is wrong and what to do."""

import contextlib


class ImclassError(Exception):
    """Bad input or a missing resource. The CLI prints the message on one line and exits
    with `exit_code`."""

    exit_code = 2


class ConfigError(ImclassError):
    """An unknown key or an out-of-range value in the configuration."""


class DataError(ImclassError):
    """A dataset that is missing, damaged or not what it claims to be."""


class Stopped(ImclassError):
    """The user stopped a run (Ctrl-C, SIGTERM) before it had anything to keep; the exit code
    is the shell's for that signal (130, 143)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class OutOfMemory(ImclassError):
    """A stage ran out of memory: which stage, how many images, what to try; exit 1 (the
    input was not wrong, the machine was too small for the settings)."""

    exit_code = 1


def is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError (Python, NumPy), PyTorch's CPU allocator refusing ("can't allocate
    memory") or its CUDA OutOfMemoryError."""
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


@contextlib.contextmanager
def memory_stage(what: str, advice: str):
    """Turn running out of memory inside the block into one sentence: `what` was being done
    (with how many images, at which size) and `advice` (what to try, what was kept)."""
    try:
        yield
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        raise OutOfMemory(f"ran out of memory while {what}; {advice}") from None
