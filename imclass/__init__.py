"""imclass: from images to a trained, evaluated and explained image classifier.

The public API is imported lazily, so `import imclass` (and `imclass --help`) stay instant.
"""

from imclass.version import __version__

__all__ = ["train", "evaluate", "predict", "export", "load", "load_run", "RunConfig",
           "load_config"]


def __getattr__(name):
    if name in ("train", "evaluate", "predict", "export", "load", "load_run"):
        from imclass import api
        return getattr(api, name)
    if name == "RunConfig":
        from imclass.config import RunConfig
        return RunConfig
    if name == "load_config":
        from imclass.config import load_yaml
        return load_yaml
    raise AttributeError(f"module 'imclass' has no attribute {name!r}")
