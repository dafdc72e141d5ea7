"""Writers of a PixelModel (see contract.py) to a file that needs neither imclass nor its run
folder, the contract inside:

- onnx: torch.onnx's exporter (torch.export-based), opset 18, a dynamic batch dimension; input
  `pixels` uint8 [N, C, D, D], output `probabilities` float32 [N, K]; the contract in the
  file's metadata_props (one key each, JSON values);
- torchscript: torch.jit.trace, for libtorch (C++) and older PyTorch; the contract in the
  archive's extra file imclass.json;
- pt2: torch.export.save, the current PyTorch format; the contract in imclass.json likewise.
Every file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import warnings
from pathlib import Path

import torch

from imclass.atomic import atomic_write
from imclass.contract import Contract
from imclass.extras import ONNX, need_all

FORMATS = {"onnx": ".onnx", "torchscript": ".ts", "pt2": ".pt2"}
OPSET = 18


def example_pixels(contract: Contract, batch: int = 2) -> torch.Tensor:
    side = contract.decoded_size
    return torch.randint(0, 256, (batch, contract.input_channels, side, side),
                         dtype=torch.uint8)


def batch_dim() -> dict:
    return {"pixels": {0: torch.export.Dim("batch", min=1, max=65536)}}


def write(module: torch.nn.Module, contract: Contract, out: Path, fmt: str) -> None:
    """`module` (a PixelModel on the CPU, in eval mode) as a `fmt` file at `out`."""
    if fmt == "onnx":
        need_all(ONNX, "onnx", "an ONNX export")
    # weights in the default layout: channels_last ones (as load_run keeps them for eager
    # speed) make the exporter add layout ops, 1.5x slower in ONNX Runtime at 224 px
    module = copy.deepcopy(module).to(memory_format=torch.contiguous_format)
    example = example_pixels(contract)
    metadata = contract.to_metadata()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' deprecation and tracer notes
        if fmt == "onnx":
            write_onnx(module, example, metadata, out)
        elif fmt == "torchscript":
            traced = torch.jit.trace(module, example)
            extra = {"imclass.json": json.dumps(metadata)}
            atomic_write(out, lambda tmp: torch.jit.save(traced, str(tmp), _extra_files=extra))
        else:
            program = torch.export.export(module, (example,), dynamic_shapes=batch_dim())
            buffer = io.BytesIO()  # torch.export.save wants a name ending .pt2, or a buffer
            torch.export.save(program, buffer, extra_files={"imclass.json": json.dumps(metadata)})
            atomic_write(out, lambda tmp: tmp.write_bytes(buffer.getvalue()))


def write_onnx(module: torch.nn.Module, example: torch.Tensor, metadata: dict[str, str],
               out: Path) -> None:
    import onnx

    with contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
        program = torch.onnx.export(module, (example,), None, input_names=["pixels"],
                                    output_names=["probabilities"], opset_version=OPSET,
                                    dynamic_shapes=batch_dim(), dynamo=True, verbose=False,
                                    external_data=False)
    proto = program.model_proto
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    atomic_write(out, lambda tmp: onnx.save(proto, str(tmp)))
