"""Rebuilding a model whose layers were narrowed by structured pruning (`imclass prune
--structured`): the architecture is built at its configured widths, then every layer is
resized to the shapes of the saved tensors before they are loaded.

Written here because torch-pruning's own way to save a pruned model (`tp.state_dict`) pickles
each module's `__dict__`, and imclass never unpickles a checkpoint: the shapes are in the
safetensors file already, and the few attributes that follow from them (a convolution's
channels and groups, a norm's features, a linear layer's sizes) are set from those shapes.
"""

from __future__ import annotations

import torch
from torch import nn

from imclass.errors import DataError


def fit_to_state(model: nn.Module, state: dict[str, torch.Tensor]) -> int:
    """Resize the layers of `model` whose tensors in `state` have other shapes; returns how
    many layers changed. The values are left for `load_state_dict` to fill."""
    changed = 0
    for prefix, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False)) | dict(
            module.named_buffers(recurse=False))
        new = {name: state[f"{prefix}.{name}" if prefix else name].shape for name in own
               if (f"{prefix}.{name}" if prefix else name) in state}
        if all(tuple(own[n].shape) == tuple(s) for n, s in new.items()):
            continue
        _set_attributes(module, prefix, new)
        for name, shape in new.items():
            tensor = torch.empty(shape, dtype=own[name].dtype, device=own[name].device)
            if isinstance(own[name], nn.Parameter):
                setattr(module, name, nn.Parameter(tensor, own[name].requires_grad))
            else:
                module.register_buffer(name, tensor)
        changed += 1
    follow_head(model)
    return changed


def _set_attributes(module: nn.Module, prefix: str, shapes: dict[str, torch.Size]) -> None:
    """The attributes a narrowed layer's forward reads, from its new weight shape."""
    if isinstance(module, nn.Conv2d):
        out, per_group = shapes["weight"][0], shapes["weight"][1]
        if module.groups > 1 and module.groups == module.in_channels:  # depthwise
            multiplier = module.out_channels // module.in_channels
            module.in_channels = module.groups = out // multiplier
        else:
            module.in_channels = per_group * module.groups
        module.out_channels = out
    elif isinstance(module, nn.modules.batchnorm._NormBase):
        module.num_features = shapes["weight" if "weight" in shapes else "running_mean"][0]
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = shapes["weight"]
    else:
        raise DataError(f"the checkpoint narrows layer {prefix or 'model'} "
                        f"({type(module).__name__}), which imclass cannot resize; was it "
                        "pruned by another tool?")


def follow_head(model: nn.Module) -> None:
    """Our CNN states its feature width; after pruning it is what the head reads."""
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear) and hasattr(model, "num_features"):
        model.num_features = head.in_features
