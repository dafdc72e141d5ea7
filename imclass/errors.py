"""The one exception type a user sees: a sentence saying what is wrong and what to do."""


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
