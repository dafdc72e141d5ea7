"""The public operations, as the README documents them: `imclass.train`, `imclass.evaluate`,
`imclass.predict`, `imclass.export`, `imclass.load` (a predictor for a run folder or an
exported file) and `imclass.load_run`. Each lives in its command module; this page only
gathers them under one name."""

from imclass.commands.evaluate import evaluate
from imclass.commands.export import export
from imclass.commands.predict import predict
from imclass.commands.train import RESUMABLE, resume_run, train
from imclass.predictor import Predictor, load
from imclass.runfolder import LoadedRun, load_run

__all__ = ["train", "resume_run", "RESUMABLE", "evaluate", "predict", "export", "load", "Predictor", "load_run",
           "LoadedRun"]
