"""The `imclass` command: a thin layer over `imclass.api`.

Flags for `train` are generated from the config dataclasses, so each option's default, help
and allowed range live in one place (imclass/config.py). Only the standard library and the
config module are imported here; torch loads when a command runs, so --help is instant.
"""

from __future__ import annotations

import argparse
import difflib
import json
import shlex
import sys

from imclass.version import __version__
from imclass.config import KEYS, describe_range, format_duration
from imclass.errors import ImclassError


class Parser(argparse.ArgumentParser):
    """argparse that suggests the nearest flag for a mistyped one, in one line.

    Abbreviated flags are refused (allow_abbrev=False): `--epoch` must not silently mean
    `--epochs` today and something else once another flag starting with it is added.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.argv: list[str] = []  # what was parsed: the command whose flags to suggest

    def parse_args(self, args=None, namespace=None):
        self.argv = list(sys.argv[1:] if args is None else args)
        return super().parse_args(args, namespace)

    def error(self, message: str):
        if message.startswith("unrecognized arguments:"):
            unknown = message.split(":", 1)[1].split()
            known = [s for a in self._actions for s in a.option_strings]
            commands = {}
            for sub in self._subparsers._group_actions if self._subparsers else ():
                commands |= getattr(sub, "choices", {})
            command = next((a for a in self.argv if a in commands), None)
            for name, p in commands.items():  # the command given's own flags, if known
                if command in (None, name):
                    known += [s for a in p._actions for s in a.option_strings]
            flag = next((u.split("=")[0] for u in unknown if u.startswith("--")), None)
            close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6) if flag else []
            if close:
                message += f" (did you mean {close[0]}?)"
            elif flag and command:
                message += f" (imclass {command} --help lists its options)"
        elif message.startswith("argument COMMAND: invalid choice:"):
            given = message.split("'")[1]
            commands = list(self._subparsers._group_actions[0].choices)
            close = difflib.get_close_matches(given, commands, n=1, cutoff=0.6)
            message = (f"unknown command '{given}'" + (f"; did you mean '{close[0]}'?"
                                                       if close else "")
                       + " (imclass --help lists the commands)")
        self.exit(2, f"imclass: error: {message}\n")


class VersionAction(argparse.Action):
    """`imclass --version`: what a bug report needs, imclass and the libraries it runs on."""

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import PackageNotFoundError, version

        parts = [f"imclass {__version__}"]
        for lib in ("torch", "timm"):
            try:
                parts.append(f"{lib} {version(lib)}")
            except PackageNotFoundError:
                parts.append(f"{lib} not installed")
        print(", ".join(parts))
        parser.exit(0)


def _flag(name: str, meta: dict) -> str:
    return "--" + (meta["flag"] or name).replace("_", "-")


def _help(f, meta: dict) -> str:
    text = meta["help"]
    if meta["choices"]:
        text += f" {{{', '.join(meta['choices'])}}}"
    elif meta["low"] is not None or meta["high"] is not None:
        text += f", in {describe_range(meta)}"
    default = f.default if f.default is not argparse.SUPPRESS else None
    if isinstance(default, tuple):
        default = ",".join(map(str, default))
    if default is not None:
        text += f" (default {default})"
    return text.replace("%", "%%")


def _add_config_flags(parser: argparse.ArgumentParser, sections=None, skip=()) -> None:
    groups = {}
    for name, (section, f, _typ) in KEYS.items():
        if (sections and section not in sections) or name in skip:
            continue
        if section not in groups:
            groups[section] = parser.add_argument_group(f"{section} options")
        meta = f.metadata
        switch = {"nargs": "?", "const": "true"} if _typ is bool else {}  # --pretrained alone
        value = (meta["flag"] or name).upper()  # the usage line names it: --lr LR
        groups[section].add_argument(_flag(name, meta), dest=f"cfg:{name}", metavar=value,
                                     default=argparse.SUPPRESS, help=_help(f, meta), **switch)


def _add_track_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("tracking")
    group.add_argument("--track", metavar="KINDS", help="also send the run to tensorboard "
                       "(RUN_DIR/tensorboard/) and/or mlflow, comma-separated (default none)")
    group.add_argument("--mlflow-uri", metavar="URI",
                       help="MLflow tracking server or store (default $MLFLOW_TRACKING_URI, "
                       "else a local SQLite store in ./mlruns)")
    group.add_argument("--mlflow-experiment", metavar="NAME",
                       help="MLflow experiment name (default $MLFLOW_EXPERIMENT_NAME, else "
                       "imclass)")


def _track_options(args: argparse.Namespace):
    from imclass.tracking import options_from, parse_kinds
    return options_from(parse_kinds(args.track), args.mlflow_uri, args.mlflow_experiment)


def build_parser() -> Parser:
    parser = Parser(prog="imclass", allow_abbrev=False, description="Train, evaluate and use image classifiers. "
                    "Run 'imclass COMMAND --help' for a command's options.")
    parser.add_argument("--version", action=VersionAction, nargs=0,
                        help="the versions of imclass, torch and timm")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    train = sub.add_parser("train", help="train a model, evaluate it on the test set, write "
                           "the report")
    train.add_argument("--config", help="YAML file of config values (flags override it)")
    train.add_argument("--out", help="run folder (default runs/<dataset>-<model>-<time>)")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the run already in --out")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a killed or stopped run "
                       "from its last finished epoch, with its own config (only --device, "
                       "--quiet, --verbose and --track may be given)")
    train.add_argument("--nproc", type=int, metavar="N", help="train with N processes on "
                       "this machine, data-parallel (DistributedDataParallel: gloo on CPUs, "
                       "NCCL with one GPU each); the same as torchrun --nproc-per-node N -m "
                       "imclass train ...; --batch-size stays the global batch")
    train.add_argument("--quiet", action="store_true", help="print nothing but the result "
                       "and errors")
    train.add_argument("--verbose", action="store_true", help="also print how long each "
                       "stage took (data, training, evaluation, report)")
    _add_track_flags(train)
    _add_config_flags(train)
    train.set_defaults(func=_train)

    analyze = sub.add_parser("analyze", help="check a folder dataset before training: counts, "
                             "formats, sizes, broken files, duplicates, leakage")
    analyze.add_argument("path", metavar="PATH", help="the dataset folder (train/ and test/, or "
                         "one folder)")
    analyze.add_argument("--out", help="where analysis.json and plots/ go (default "
                         "analysis/<dataset folder name>)")
    analyze.add_argument("--strict", action="store_true",
                         help="exit non-zero on warnings too, not only on errors")
    _add_config_flags(analyze, sections=("data",), skip=("source", "data_dir", "val_fraction",
                                                          "subset"))
    analyze.set_defaults(func=_analyze)

    labels = sub.add_parser("labels", help="find likely label errors: K-fold out-of-fold "
                            "predictions and confident learning (cleanlab); a review page and "
                            "a corrections file for train --relabel/--exclude")
    labels.add_argument("path", metavar="DATA", help="a dataset folder, or fashion-mnist")
    labels.add_argument("--folds", type=int, default=5, help="cross-validation folds "
                        "(default 5): each image scored by a model trained without it")
    labels.add_argument("--out", help="where label_issues.csv, review.html and "
                        "corrections.csv go (default label-review/<dataset name>)")
    labels.add_argument("--config", help="YAML file of config values (flags override it)")
    labels.add_argument("--quiet", action="store_true")
    _add_config_flags(labels, skip=("source",))
    labels.set_defaults(func=_labels)

    lr_find = sub.add_parser("lr-find", help="learning-rate range test: loss against an "
                             "exponentially rising rate, and a suggested --lr")
    lr_find.add_argument("--config", help="YAML file of config values (flags override it)")
    lr_find.add_argument("--out", default="runs/lr-find", help="where lr_find.png and "
                         "lr_find.json go (default runs/lr-find)")
    lr_find.add_argument("--iterations", type=int, default=100,
                         help="steps of the test (default 100)")
    lr_find.add_argument("--quiet", action="store_true")
    _add_config_flags(lr_find)
    lr_find.set_defaults(func=_lr_find)

    models = sub.add_parser("models", help="list the architectures --model accepts")
    models.add_argument("pattern", nargs="?", default="*", metavar="PATTERN",
                        help="a word found anywhere in the name (resnet), or a shell-style "
                        "pattern (resnet5?)")
    models.add_argument("--pretrained", action="store_true",
                        help="only those with pretrained weights")
    models.set_defaults(func=_models)

    cache = sub.add_parser("cache", help="list the decode cache (~/.cache/imclass/decoded) "
                           "or prune it")
    cache.add_argument("action", nargs="?", choices=("list", "prune"), default="list")
    cache.add_argument("--older-than", type=float, metavar="DAYS",
                       help="prune: entries no run has used for this many days")
    cache.add_argument("--max-size", metavar="SIZE", help="prune: the least recently used "
                       "entries until the rest fit, e.g. 2GB or 500MB")
    cache.add_argument("--all", action="store_true", help="prune: every entry")
    cache.add_argument("--dry-run", action="store_true", help="prune: only say what would go")
    cache.add_argument("--cache-dir", help="the cache folder (default ~/.cache/imclass)")
    cache.set_defaults(func=_cache)

    evaluate = sub.add_parser("evaluate", help="re-evaluate a saved run on its test set")
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("--data-dir", help="the same kind of dataset in another folder "
                          "(a new test set with the same classes)")
    evaluate.add_argument("--split", choices=("test", "val"), default="test",
                          help="which split to evaluate (default test)")
    evaluate.add_argument("--tta", action="store_true",
                          help="also report test-time augmentation: probabilities averaged "
                          "over the flips the run was trained with")
    evaluate.add_argument("--batch-size", type=int, help="images per forward pass (default: "
                          "the run's eval_batch_size); lower it if memory runs out")
    evaluate.add_argument("--quiet", action="store_true")
    evaluate.add_argument("--json", action="store_true", help="print the key figures as JSON "
                          "on stdout (for scripts); metrics.json has them all")
    evaluate.set_defaults(func=_evaluate)

    tune = sub.add_parser("tune", help="search hyperparameters (Optuna): grid, random or TPE, "
                          "with pruning, resumable")
    tune.add_argument("--space", required=True, help="YAML search space: config key -> list of "
                      "choices or {low, high, log, type}")
    tune.add_argument("--method", choices=("grid", "random", "tpe"), default="tpe")
    tune.add_argument("--trials", type=int, default=20, help="trials to finish (default 20)")
    tune.add_argument("--timeout", type=float, help="stop starting trials after this many "
                      "seconds")
    tune.add_argument("--pruner", choices=("median", "halving", "none"), default="median")
    tune.add_argument("--storage", help="Optuna storage URL shared by several workers "
                      "(default: study.db, SQLite, in --out)")
    tune.add_argument("--out", default="studies/study", help="study folder (default "
                      "studies/study); running again resumes it")
    tune.add_argument("--heartbeat", type=int, default=10, help="seconds between a running "
                      "trial's signs of life; one silent for 3x this (its process was killed) "
                      "is marked failed and its point is tried again (default 10)")
    tune.add_argument("--no-final-run", action="store_true",
                      help="skip training the best configuration on the test set")
    tune.add_argument("--config", help="YAML file of the fixed config values")
    tune.add_argument("--quiet", action="store_true")
    _add_track_flags(tune)
    _add_config_flags(tune)
    tune.set_defaults(func=_tune)

    compare = sub.add_parser("compare", help="key figures, differing configs and overlaid "
                             "curves of several runs")
    compare.add_argument("run_dirs", metavar="RUN_DIR", nargs="+")
    compare.add_argument("--out", default="compare.html",
                         help="the HTML page to write (default compare.html)")
    compare.set_defaults(func=_compare)

    predict = sub.add_parser("predict", help="decisions for image files, folders, globs or "
                             "CSVs of paths; to the console or a CSV/JSONL file")
    predict.add_argument("model", metavar="MODEL", help="a run folder or an exported .onnx, "
                         ".ts or .pt2 file")
    predict.add_argument("images", metavar="IMAGE", nargs="+", help="image files, folders "
                         "(searched recursively), glob patterns or CSV files of paths")
    predict.add_argument("--top-k", type=int, default=3, help="classes to show (default 3)")
    predict.add_argument("--json", action="store_true", help="print JSON for machines")
    predict.add_argument("--out", help="write one row per image to this .csv or .jsonl file "
                         "instead of the console")
    predict.add_argument("--backend", choices=("torch", "onnx"), help="torch: the run's "
                         "PyTorch model; onnx: ONNX Runtime (default for an .onnx file)")
    predict.add_argument("--batch-size", type=int, default=64, help="images per forward pass "
                         "(default 64)")
    predict.add_argument("--workers", type=int, help="decoding processes (default: the CPU "
                         "cores, at most 8; none for a few files)")
    predict.set_defaults(func=_predict)

    similar = sub.add_parser("similar", help="the training images most like each query, by "
                             "the model's features: JSON, a gallery per query and a page")
    similar.add_argument("run_dir", metavar="RUN_DIR")
    similar.add_argument("images", metavar="IMAGE", nargs="+", help="image files, folders, "
                         "glob patterns or CSV files of paths")
    similar.add_argument("--k", type=int, default=8, help="neighbours per query (default 8)")
    similar.add_argument("--out", help="folder for the galleries and similar.html (default "
                         "RUN_DIR/similarity/queries)")
    similar.set_defaults(func=_similar)

    prune = sub.add_parser("prune", help="a sparser or smaller copy of a trained model, "
                           "fine-tuned, as a new run folder with its own report")
    prune.add_argument("run_dir", metavar="RUN_DIR")
    prune.add_argument("--amount", type=float, default=0.5, help="share to prune: of all "
                       "conv/linear weights (zeroed), or with --structured of each layer's "
                       "channels (removed); default 0.5")
    prune.add_argument("--structured", action="store_true", help="remove whole channels "
                       "(torch-pruning): a smaller, faster model")
    prune.add_argument("--fine-tune-epochs", type=int, help="epochs of fine-tuning after "
                       "pruning (default: 30%% of the trained run's epochs, at least 3)")
    prune.add_argument("--lr", type=float, help="peak learning rate of the fine-tuning "
                       "(default: a tenth of the run's, or its --fine-tune-lr)")
    prune.add_argument("--out", help="the new run folder (default: beside RUN_DIR, named "
                       "RUN_DIR-pruned50 and the like)")
    prune.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    prune.add_argument("--quiet", action="store_true")
    prune.set_defaults(func=_prune)

    export = sub.add_parser("export", help="a run's model as one ONNX, TorchScript or "
                            "torch.export file with its classes and thresholds inside")
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--format", choices=("onnx", "torchscript", "pt2"), default="onnx",
                        help="default onnx")
    export.add_argument("--int8", action="store_true", help="ONNX Runtime static int8 "
                        "quantization calibrated on validation images; prints its cost")
    export.add_argument("--out", help="the file to write (default RUN_DIR/model.onnx, "
                        "model-int8.onnx, model.ts or model.pt2)")
    export.set_defaults(func=_export)

    serve = sub.add_parser("serve", help="an HTTP API and a web page for a model")
    serve.add_argument("model", metavar="MODEL", help="a run folder or an exported .onnx, .ts "
                       "or .pt2 file")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default "
                       "127.0.0.1, this machine only; 0.0.0.0 exposes it to the network)")
    serve.add_argument("--port", type=int, default=8000, help="default 8000")
    serve.add_argument("--backend", choices=("torch", "onnx"))
    serve.add_argument("--api-key", help="require this key in the X-API-Key header of every "
                       "API request (use it with --host 0.0.0.0)")
    serve.add_argument("--max-upload-mb", type=float, default=20,
                       help="refuse larger requests with 413 (default 20)")
    serve.add_argument("--max-batch", type=int, default=32, help="most images in one forward "
                       "pass when requests arrive together (default 32)")
    serve.add_argument("--max-wait-ms", type=float, default=5, help="how long a request waits "
                       "for others to join its batch, ms (default 5)")
    serve.add_argument("--top-k", type=int, default=3, help="classes per image (default 3)")
    serve.set_defaults(func=_serve)

    annotate = sub.add_parser("annotate", help="label a folder of images in the browser, a "
                              "model suggesting labels and choosing what to show next")
    annotate.add_argument("folder", metavar="FOLDER", help="a folder of images: unlabelled, "
                          "class folders, or a CSV beside images/; labels go to "
                          "FOLDER/labels.csv")
    annotate.add_argument("--classes", help="the class names, comma-separated (ants,bees); "
                          "default: the labels the folder already has")
    annotate.add_argument("--classes-from", metavar="FILE", help="take the classes from a "
                          "CSV's label column or a text file of one class per line")
    annotate.add_argument("--multilabel", action="store_true", help="several labels per image")
    annotate.add_argument("--host", default="127.0.0.1", help="interface to listen on "
                          "(default 127.0.0.1; any other needs the printed token)")
    annotate.add_argument("--port", type=int, default=8000, help="default 8000")
    annotate.add_argument("--token", help="the token the page needs beyond this machine "
                          "(default: a random one, printed in the address)")
    annotate.add_argument("--min-labels", type=int, default=None, help="labels of each class "
                          "before the model trains (default 5)")
    annotate.add_argument("--cache-dir", help="where decoded images are kept (default "
                          "~/.cache/imclass)")
    annotate.set_defaults(func=_annotate)
    return parser


def _train(args: argparse.Namespace, argv: list[str]) -> int:
    import os

    from imclass import api

    if args.nproc is not None and args.nproc < 1:
        raise ImclassError(f"--nproc {args.nproc}: give 1 or more processes")
    if (args.nproc or 1) > 1 and "WORLD_SIZE" not in os.environ:
        from imclass.distributed import launch
        process_started(launching=True)  # its processes count a --budget from its start
        return launch(args.nproc, without_flag(argv, "--nproc"))
    if args.resume:
        run_dir = _resume(args, argv)
    else:
        cfg = _base_config(args)
        run_dir = api.train(cfg, args.out, overwrite=args.overwrite, quiet=args.quiet,
                            verbose=args.verbose, command=shlex.join(["imclass", *argv]),
                            track=_track_options(args), started=process_started())
    if os.environ.get("RANK", "0") != "0":  # another rank: rank 0 says where the run went
        return 0
    print(run_dir / "report.html")
    stopped = json.loads((run_dir / "run.json").read_text()).get("stopped")
    return 128 + stopped["signal_number"] if stopped else 0  # 130 Ctrl-C, 143 SIGTERM


def process_started(launching: bool = False) -> float:
    """The time.monotonic() reading at which this command started: its process's start, or
    in a process torchrun started (WORLD_SIZE set) that of the `imclass train --nproc N`
    that launched it (IMCLASS_STARTED, wall-clock, which `launching` sets for them)."""
    import os
    import time

    from imclass.timekeeping import process_age
    given = os.environ.get("IMCLASS_STARTED") if "WORLD_SIZE" in os.environ else None
    wall = float(given) if given else time.time() - process_age()
    if launching:
        os.environ["IMCLASS_STARTED"] = repr(wall)
    return time.monotonic() - (time.time() - wall)


def without_flag(argv: list[str], flag: str) -> list[str]:
    """argv without `flag VALUE` or `flag=VALUE`."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        elif not a.startswith(flag + "="):
            out.append(a)
    return out


def _resume(args: argparse.Namespace, argv: list[str]):
    """--resume: the run's own config; a flag that would change the result is refused."""
    from imclass import api

    flags = {k.split(":", 1)[1]: v for k, v in vars(args).items() if k.startswith("cfg:")}
    given = sorted(set(flags) - set(api.RESUMABLE)) + [
        f for f in ("config", "out", "overwrite") if getattr(args, f)]
    if given:
        raise ImclassError(f"--resume takes the run's own config ({args.resume}/config.yaml);"
                           f" drop --{given[0].replace('_', '-')} (only --device, "
                           "--checkpoint-minutes, --quiet, --verbose and --track may change)")
    return api.resume_run(args.resume, quiet=args.quiet, verbose=args.verbose,
                          overrides=flags, track=_track_options(args),
                          command=shlex.join(["imclass", *argv]))


def _evaluate(args: argparse.Namespace, argv: list[str]) -> int:
    from imclass import api
    from imclass.metrics import HEADLINES, headline

    if args.batch_size is not None and args.batch_size < 1:
        raise ImclassError(f"--batch-size {args.batch_size}: give 1 or more images")
    result = api.evaluate(args.run_dir, data_dir=args.data_dir, split=args.split, tta=args.tta,
                          batch_size=args.batch_size, quiet=args.quiet)
    def key_figures(m):
        keys = [k for k, _ in HEADLINES[m["task"]]] + ["top_3", "ece", "threshold", "count"]
        return {k: m[k] for k in keys if k in m}
    if args.json:  # for scripts: the figures at full precision
        print(json.dumps({kind: key_figures(m) for kind, m in result.items()}))
    elif args.quiet:  # the log said nothing: the result still goes out, readably
        for kind, m in result.items():
            print(f"{args.split}{' with TTA' if kind == 'tta' else ''}: {headline(m)} "
                  f"on {m['count']} images")
    return 0


def _lr_find(args: argparse.Namespace, argv: list[str]) -> int:
    from pathlib import Path

    from imclass.commands.lr_find import lr_find

    if args.iterations < 20:
        raise ImclassError("--iterations must be at least 20 for a usable curve")
    result = lr_find(_base_config(args), Path(args.out), args.quiet, args.iterations)
    print(f"suggested --lr {result['suggestion']:.3g} (steepest fall of the loss); plot: "
          f"{Path(args.out) / 'lr_find.png'}")
    return 0


def _models(args: argparse.Namespace, argv: list[str]) -> int:
    import fnmatch

    from imclass.models import MODELS
    from imclass.models import zoo

    ours = [m for m in MODELS if fnmatch.fnmatch(m, zoo.as_pattern(args.pattern))
            and not args.pretrained]
    names = zoo.list_models(args.pattern, pretrained=args.pretrained)
    if args.pretrained:  # timm lists name.tag; one line per architecture
        names = sorted({n.split(".")[0] for n in names})
    if not ours and not names:
        raise ImclassError(f"no model matches '{args.pattern}' (a word matches anywhere in a "
                           "name; try a shorter one, or imclass models with no pattern)")
    detailed = len(names) <= DETAILED_MODELS  # parameter counts take a model build each
    rows = [(name, "any (native)", "", MODELS[name].__doc__ or "") for name in ours]
    for name in names:
        spec = zoo.input_spec(name)
        params = f"{zoo.parameter_count(name) / 1e6:.1f}M" if detailed else ""
        rows.append((name, f"{spec.channels}x{spec.size}x{spec.size}", params,
                     zoo.weights_note(name)))
    header = ("model", "default input", "parameters" if detailed else "", "weights")
    widths = [max(len(r[k]) for r in (header, *rows)) for k in range(4)]
    for row in (header, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    if not detailed:
        print(f"({len(rows)} models; narrow the pattern to {DETAILED_MODELS} or fewer to see "
              "their parameter counts)")
    return 0


DETAILED_MODELS = 40


def _cache(args: argparse.Namespace, argv: list[str]) -> int:
    from pathlib import Path

    from imclass.commands import cache
    from imclass.config import DataConfig
    from imclass.data.own import cache_root

    root = cache_root(DataConfig(cache_dir=args.cache_dir))
    rules = {"older_than_days": args.older_than, "max_size": args.max_size,
             "everything": args.all}
    if args.action == "list":
        given = [f"--{k}" for k, v in (("older-than", args.older_than),
                                       ("max-size", args.max_size), ("all", args.all),
                                       ("dry-run", args.dry_run)) if v]
        if given:
            raise ImclassError(f"{given[0]} is for imclass cache prune")
        print(cache.describe(Path(root)))
        return 0
    if args.older_than is None and args.max_size is None and not args.all:
        raise ImclassError("imclass cache prune needs what to remove: --older-than DAYS, "
                           "--max-size SIZE or --all (add --dry-run to see it first)")
    print(cache.prune(Path(root), dry_run=args.dry_run, **rules))
    return 0


def _labels(args: argparse.Namespace, argv: list[str]) -> int:
    from pathlib import Path

    from imclass.commands.labels import labels
    from imclass.console import make_log
    from imclass.extras import need

    need("cleanlab", "labels", "imclass labels")
    cfg = _base_config(args, source=args.path)
    out = Path(args.out) if args.out else Path("label-review") / (
        Path(args.path).resolve().name if Path(args.path).exists() else args.path)
    issues, folder = labels(cfg, out, args.folds, make_log(args.quiet))
    print(folder / "label_issues.csv")
    return 0


def _analyze(args: argparse.Namespace, argv: list[str]) -> int:
    from pathlib import Path

    from imclass.data.audit import analyze, summary_text

    from imclass.devices import resolve_device
    from imclass.run_setup import check_names, plan

    cfg = check_names(_base_config(args, source=args.path))
    # decoded at the size training will decode at (the recipe's), so train reuses the cache
    cfg, scanned, *_ = plan(cfg, resolve_device(cfg.train.device).type)
    out = Path(args.out) if args.out else Path("analysis") / (Path(args.path).resolve().name)
    analysis = analyze(cfg.data, out, scanned)
    print(summary_text(analysis))
    print(f"details: {out / 'analysis.json'}")
    levels = analysis["counts_by_level"]
    return 1 if levels.get("error") or (args.strict and levels.get("warning")) else 0


def _base_config(args: argparse.Namespace, **fixed):
    from imclass.config import RunConfig, load_yaml, override

    cfg = load_yaml(args.config) if getattr(args, "config", None) else RunConfig()
    flags = {k.split(":", 1)[1]: v for k, v in vars(args).items() if k.startswith("cfg:")}
    flags |= fixed
    return override(cfg, flags)


def _tune(args: argparse.Namespace, argv: list[str]) -> int:
    from pathlib import Path

    from imclass.commands import tune

    if args.trials < 1:
        raise ImclassError("--trials must be at least 1")
    base = _base_config(args)
    params = tune.load_space(args.space, base)
    out = Path(args.out)
    base, stop_on_budget = tune.share_budget(base, args.trials, not args.no_final_run,
                                             process_started())
    if stop_on_budget and not args.quiet:
        print(f"budget: {args.trials} trials{' and the final run' if not args.no_final_run else ''}"
              f" of {format_duration(base.train.budget)} each; no trial starts that would not "
              "end in time", file=sys.stderr)
    from imclass.tracking import study_run
    track = study_run(_track_options(args), out.name, {p.key: str(p.choices or (p.low, p.high))
                                                       for p in params})
    study = tune.run_study(base, params, out, method=args.method, trials=args.trials,
                           timeout=args.timeout, pruner=args.pruner, storage=args.storage,
                           seed=base.train.seed, heartbeat_s=args.heartbeat, track=track,
                           callbacks=stop_on_budget)
    header, rows = tune.trial_rows(study)
    from imclass.commands.compare import text_table
    print(text_table(header, rows))
    summary = tune.write_outputs(study, base, params, out, final_run=not args.no_final_run,
                                 quiet=args.quiet, track=track)
    print(f"\nbest trial {summary['best_trial']}: validation {summary['scored_by']} "
          f"{summary['best_value']:.4f} with {summary['best_params']}")
    if summary["test"]:
        print(f"final run of the best config, test accuracy {summary['test']['accuracy']:.4f}")
    print(f"best config: {out / 'best.yaml'}; page: {out / 'study.html'}")
    return 0


def _compare(args: argparse.Namespace, argv: list[str]) -> int:
    from imclass.commands.compare import compare

    text, page = compare(args.run_dirs, args.out)
    print(text)
    print(f"\ncurves: {page}")
    return 0


def _prune(args: argparse.Namespace, argv: list[str]) -> int:
    from imclass.commands.prune import prune
    from imclass.extras import need

    if args.structured:
        need("torch_pruning", "prune", "imclass prune --structured")
    run_dir = prune(args.run_dir, args.amount, structured=args.structured,
                    fine_tune_epochs=args.fine_tune_epochs, lr=args.lr, out=args.out,
                    overwrite=args.overwrite, quiet=args.quiet,
                    command=shlex.join(["imclass", *argv]))
    print(run_dir / "report.html")
    return 0


def _similar(args: argparse.Namespace, argv: list[str]) -> int:
    from imclass.commands.similar import similar

    if args.k < 1:
        raise ImclassError(f"--k {args.k}: give at least 1 neighbour")
    results, folder = similar(args.run_dir, args.images, args.k, args.out,
                              log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(results, indent=2))
    print(f"galleries: {folder / 'similar.html'}", file=sys.stderr)
    failed = [r for r in results if "error" in r]
    for r in failed:  # exit 1 says some failed; stderr says which and why
        print(f"imclass: error: {r['image']}: {r['error']}", file=sys.stderr)
    if failed:
        print(f"imclass: {len(failed)} of {len(results)} queries failed", file=sys.stderr)
    return 1 if failed else 0


def _predict(args: argparse.Namespace, argv: list[str]) -> int:
    import time
    from pathlib import Path

    from imclass.commands import predict as cmd
    from imclass.predictor import load

    if args.top_k < 1 or args.batch_size < 1 or (args.workers or 0) < 0:
        raise ImclassError("--top-k and --batch-size must be at least 1, --workers at least 0")
    out = Path(args.out) if args.out else None
    cmd.check_output(out)
    predictor = load(args.model, args.backend)
    skipped: list = []
    paths = cmd.collect(args.images, skipped)
    if skipped:  # said, not silently dropped
        names = ", ".join(p.name for p in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        print(f"imclass: skipped {len(skipped)} file(s) that are not images by their "
              f"extension ({names})", file=sys.stderr)
    top_k = min(args.top_k, len(predictor.contract.class_names))  # no empty class_3 columns
    started = time.perf_counter()
    results = cmd.predict_files(predictor, paths, top_k, args.batch_size, args.workers,
                                progress=out is not None)
    if out is not None:
        counts = cmd.write_predictions(results, out, top_k, predictor.contract.task)
        seconds = time.perf_counter() - started
        scored = counts["images"] - counts["failed"]
        print(f"{scored} of {counts['images']} images scored in {seconds:.1f}s "
              f"({scored / seconds:.3g} images a second), {counts['failed']} failed: {out}")
        return 1 if counts["failed"] else 0
    results = list(results)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"{r['image']}: {_decision_text(r)}")
    failed = sum("error" in r for r in results)
    if failed:
        print(f"imclass: {failed} of {len(results)} images could not be read", file=sys.stderr)
    return 1 if failed else 0


def _decision_text(r: dict) -> str:
    if "error" in r:
        return f"error: {r['error']}"
    tops = ", ".join(f"{t['class']} {t['probability']:.1%}" for t in r["top"])
    if "path" in r:
        return " > ".join(f"{n['node']} {n['probability']:.1%}" for n in r["path"])
    if "labels" in r:
        return f"labels {', '.join(r['labels']) or 'none'} ({tops})"
    return f"{r['decision']} ({tops})"


def _export(args: argparse.Namespace, argv: list[str]) -> int:
    from imclass.commands.export import export

    path, _ = export(args.run_dir, args.out, args.format, args.int8, quiet=False)
    print(path)
    return 0


def _serve(args: argparse.Namespace, argv: list[str]) -> int:
    from imclass.extras import SERVE, need_all

    need_all(SERVE, "serve", "imclass serve")
    from imclass.commands.serve import serve

    if args.max_batch < 1 or args.max_wait_ms < 0 or args.max_upload_mb <= 0:
        raise ImclassError("--max-batch must be at least 1, --max-wait-ms at least 0 and "
                           "--max-upload-mb above 0")
    serve(args.model, host=args.host, port=args.port, backend=args.backend,
          api_key=args.api_key, max_upload_mb=args.max_upload_mb, max_batch=args.max_batch,
          max_wait_ms=args.max_wait_ms, top_k=args.top_k)
    return 0


def _annotate(args: argparse.Namespace, argv: list[str]) -> int:
    from imclass.extras import SERVE, need, need_all

    need_all(SERVE, "serve", "imclass annotate")
    need("cleanlab.filter", "labels", "imclass annotate (its review queue)")
    from imclass.commands.annotate import annotate
    from imclass.config import DataConfig
    from imclass.data.cache import decoded_dir
    from imclass.data.own import cache_root
    from imclass.labelstore import classes_from

    if args.classes and args.classes_from:
        raise ImclassError("give --classes or --classes-from, not both")
    if args.min_labels is not None and args.min_labels < 1:
        raise ImclassError("--min-labels must be at least 1")
    classes = ([c.strip() for c in args.classes.split(",") if c.strip()] if args.classes
               else classes_from(args.classes_from) if args.classes_from else None)
    annotate(args.folder, classes=classes, multilabel=args.multilabel, host=args.host,
             port=args.port, token=args.token, minimum=args.min_labels,
             cache_dir=decoded_dir(cache_root(DataConfig(cache_dir=args.cache_dir))))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:  # bare `imclass`: what it does and its commands, not an error
        build_parser().print_help()
        return 0
    args = build_parser().parse_args(argv)
    rank = rank_prefix()
    try:
        return args.func(args, argv)
    except ImclassError as exc:
        print(f"imclass: error: {rank}{exc}", file=sys.stderr)
        return exc.exit_code
    except RuntimeError as exc:
        if not rank:
            raise
        # a collective that lost a peer (killed, out of memory): torchrun names the rank
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"imclass: error: {rank}lost the other processes ({first[:200]})",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("imclass: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `imclass models | head`: the reader left; no traceback
        quiet_stdout()
        return 0


def rank_prefix() -> str:
    """'rank N: ' for the processes of a distributed run, so an error says whose it is."""
    import os
    return f"rank {os.environ['RANK']}: " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""


def quiet_stdout() -> None:
    """Point stdout at /dev/null, so Python's flush at exit does not fail on the closed pipe
    (the recipe of the Python docs, 'Note on SIGPIPE')."""
    import os
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
