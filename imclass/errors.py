"""The one exception type a user sees: a sentence saying what is wrong and what to do."""


class ImclassError(Exception):
    """Bad input or a missing resource. The CLI prints the message on one line and exits 2."""


class ConfigError(ImclassError):
    """An unknown key or an out-of-range value in the configuration."""


class DataError(ImclassError):
    """A dataset that is missing, damaged or not what it claims to be."""
