"""The package version, and the versions of what a run depends on (recorded with every run)."""

from __future__ import annotations

__version__ = "0.1.0"


def versions() -> dict[str, str]:
    import platform

    import numpy
    import sklearn
    import torch
    return {"imclass": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "scikit-learn": sklearn.__version__, "python": platform.python_version()}
