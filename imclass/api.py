"""The public operations, as the README documents them: `imclass.train`, `imclass.evaluate`,
`imclass.predict` and `imclass.load_run`. Each lives in its command module; this page only
gathers them under one name."""

from imclass.commands.evaluate import evaluate
from imclass.commands.predict import predict
from imclass.commands.train import train
from imclass.runfolder import LoadedRun, load_run

__all__ = ["train", "evaluate", "predict", "load_run", "LoadedRun"]
