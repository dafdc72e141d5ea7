"""report.html: one self-contained page (plots embedded, nothing from the network) per run.

It is built from the run folder alone (config.yaml, run.json, metrics.json, history.csv,
plots/), so it can be rebuilt at any time with `write_report(run_dir)`.
"""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path

from imclass.atomic import atomic_write_text
from imclass.metrics import HEADLINES

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#1d232a;line-height:1.45}
h1{margin-bottom:.1em} h2{border-bottom:2px solid #e3e7ec;padding-bottom:.2em;margin-top:1.8em}
.sub{color:#5b6773;margin-top:0} table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #d9dee4;padding:.3em .7em;text-align:right} th{background:#f3f5f8}
td:first-child,th:first-child{text-align:left} .cards{display:flex;gap:1em;flex-wrap:wrap}
.card{background:#f3f5f8;border-radius:8px;padding:.7em 1.1em;min-width:9em}
.card b{display:block;font-size:1.5em} img{max-width:100%;border:1px solid #e3e7ec;
border-radius:4px;margin:.4em 0} .warn{background:#fff4e0;border-left:4px solid #f0a020;
padding:.5em .9em;margin:.5em 0} pre{background:#f3f5f8;padding:.8em;overflow-x:auto;
font-size:.85em} a{color:#1f5fa8}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:1em;align-items:start}
"""


def img_tag(path: Path, alt: str) -> str:
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'


def html_table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) else escape(str(v))
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _fmt(v, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{v:.2%}" if pct else f"{v:.4f}"


PERCENT = {"accuracy", "top_3", "accuracy_at_threshold", "subset_accuracy",
           "balanced_accuracy"}
VAL_ACCURACY = {"multilabel": "best validation label accuracy"}  # 1 - Hamming loss at 0.5


def _in_precision(run: dict) -> str:
    """', in bf16 mixed precision' after the hardware; nothing for fp32 or an older run."""
    precision = run.get("precision")
    return f", in {escape(precision)}" if precision and precision != "fp32" else ""


def unvalidated(run: dict) -> bool:
    """Whether the run trained on every training image, with no validation (--val-fraction
    0): its best epoch's validation figures are null."""
    val = run.get("validation")
    return bool(val) and val.get("val_loss") is None


def _summary(run: dict, test: dict) -> str:
    val = run.get("validation", {})
    task = run.get("task", "multiclass")
    cards = [(f"test {label}", _fmt(test.get(key), key in PERCENT))
             for key, label in HEADLINES[task]]
    no_val = unvalidated(run)
    cards += [(VAL_ACCURACY.get(task, "best validation accuracy"),
               "none held out" if no_val else _fmt(val.get("val_acc"), True)),
              ("run time", f"{run.get('total_seconds', run.get('train_seconds', 0)):.0f} s")]
    html = '<div class="cards">' + "".join(
        f'<div class="card">{escape(k)}<b>{escape(v)}</b></div>' for k, v in cards) + "</div>"
    model, data = run.get("model", {}), run.get("data", {})
    html += (f"<p>A <b>{escape(task)}</b> classifier of {len(data.get('classes', []))} classes, "
             f"model <b>{escape(str(model.get('name')))}</b> "
             f"({model.get('parameters', 0):,} parameters, "
             f"{model.get('flops_per_image', 0) / 1e6:.1f} MFLOPs per image), trained on "
             f"{escape(str(run.get('hardware')))}{_in_precision(run)} from "
             f"{escape(str(data.get('source')))}. "
             f"Best epoch {run.get('best_epoch')} of {run.get('epochs_run')}"
             f"{' (stopped early)' if run.get('stopped_early') else ''}.</p>")
    stopped = run.get("stopped")
    if stopped:
        html += (f'<div class="warn">Stopped by the user ({escape(stopped["by"])}) at epoch '
                 f'{stopped["epoch"]} of {stopped["epochs"]}: that epoch was dropped, and the '
                 f'figures below are those of epoch {run.get("best_epoch")}, the best of the '
                 f'{run.get("epochs_run")} it completed.</div>')
    return html


def _data_section(data: dict, analysis: dict, plots: Path, recipe: dict | None = None) -> str:
    counts = data.get("counts", {})
    names = data.get("classes", [])
    rows = [[name] + [counts.get(s, {}).get(name, 0) for s in ("train", "val", "test")]
            for name in names]
    if data.get("task") != "multilabel":  # multilabel counts overlap: no meaningful total
        rows.append(["total"] + [sum(counts.get(s, {}).values())
                                 for s in ("train", "val", "test")])
    size = data.get("size", ["?", "?"])
    seen = data.get("input_size") or size[0]
    margin = (f" (the model sees the centre {seen}x{seen}; training, random crops)"
              if seen != size[0] else "")
    carved = (" The test split was held out from train/ (stratified, the same images on every "
              "run)." if analysis.get("test_carved") else "")
    chosen = "val_fraction" in ((recipe or {}).get("chosen") or {})
    why = ("the recipe's choice for a set this small; --val-fraction 0.2 holds a fifth out"
           if chosen else "--val-fraction 0")
    if counts and not sum(counts.get("val", {}).values()):
        held = f"No validation split: the model trained on every training image ({why})."
    elif data.get("val_given"):
        held = ("The validation images are the dataset's own (its val/ folder); they pick "
                "the best epoch.")
    else:
        held = ("The validation split is held out from the training images (stratified); it "
                "picks the best epoch.")
    return (f"<p>{len(names)} classes, images {data.get('channels')} channel(s) of "
            f"{size[0]}x{size[1]} pixels{margin}. {held} The test set is used only for the "
            f"results below.{carved}</p>"
            + html_table(["class", "train", "validation", "test"], rows)
            + _findings(analysis, plots)
            + img_tag(plots / "augmented.png", "training images after augmentation"))


def _findings(analysis: dict, plots: Path, examples: int = 5) -> str:
    """The dataset analysis of a folder dataset: findings by kind, and the skipped images."""
    if not analysis:
        return ""
    groups: dict[tuple, list] = {}
    for f in analysis.get("findings", []):
        groups.setdefault((f["level"], f["code"]), []).append(f)
    from imclass.data.folders import where
    rows = [[level, code, len(items), "; ".join(f"{where(f)}: {f['message']}"
                                                for f in items[:examples])
             + (" ..." if len(items) > examples else "")]
            for (level, code), items in groups.items()]
    html = "<h3>Dataset analysis</h3>"
    html += (html_table(["level", "finding", "count", "examples"], rows) if rows
             else "<p>No findings: the dataset looks clean.</p>")
    skipped = analysis.get("skipped", [])
    if skipped:
        html += (f'<div class="warn">{len(skipped)} image(s) could not be decoded and were left '
                 "out:</div>" + html_table(["split", "file", "reason"],
                                           [[s["split"], s["file"], s["reason"]]
                                            for s in skipped]))
    return html + img_tag(plots / "class_counts.png", "images per class and split")


def _training_section(run: dict, plots: Path) -> str:
    warnings = "".join(f'<div class="warn">{escape(w["message"])}</div>'
                       for w in run.get("overfitting", []))
    stop = (f"Early stopping ended training after epoch {run.get('epochs_run')}; "
            if run.get("stopped_early") else f"Training ran all {run.get('epochs_run')} epochs; ")
    by = {"loss": "the lowest validation loss"}.get(
        run.get("select_metric", "loss"), f"the highest validation {run.get('select_metric')}")
    kept = ("the last, as there was no validation to choose by" if unvalidated(run)
            else f"{by} (dashed line)")
    return (f"<p>{stop}the weights kept are those of epoch {run.get('best_epoch')}, "
            f"{kept}.</p>" + _balance(run.get("balance")) + _thresholds(run) + _start(run)
            + _stages(run)
            + (warnings or "<p>No overfitting warning was raised.</p>")
            + img_tag(plots / "curves.png", "loss, accuracy and learning-rate curves")
            + img_tag(plots / "lr_find.png", "learning-rate range test"))


def _thresholds(run: dict) -> str:
    """How the binary or multilabel decision thresholds were set, and how far to trust them."""
    fits = run.get("threshold_fits")
    if not fits:
        return ""
    names = run.get("data", {}).get("classes", [])[-len(fits):]
    rows = [[name, f["value"], "tuned for the best validation F1" if f["tuned"] else
             "kept at 0.5: too few validation images to tune on",
             f"{f['spread'][0]:.3f}-{f['spread'][1]:.3f}" if f["spread"] else "n/a",
             f["positives"], f["negatives"]] for name, f in zip(names, fits)]
    return "<p>Decision thresholds:</p>" + html_table(
        ["class", "threshold", "how", "bootstrap 10-90%", "validation positives",
         "validation negatives"], rows)


def _balance(balance: dict | None) -> str:
    """How training compensated for imbalanced classes (--balance), when it did."""
    if not balance or balance["method"] == "none":
        return ""
    how = {"weights": "the loss weighed each class by the inverse of its training count",
           "sqrt": "the loss weighed each class by the inverse square root of its training "
                   "count",
           "effective": "the loss weighed each class by its effective number of samples",
           "sampler": "batches drew every class equally often"}[balance["method"]]
    return (f"<p>Imbalanced classes (the largest has {balance['ratio']:.1f}x the training "
            f"images of the smallest): {how} (<code>--balance {balance['method']}</code>). "
            "The per-class table below shows how each class fares.</p>")


def _start(run: dict) -> str:
    """The recipe, where the weights started and how the learning rate was chosen."""
    weights = run.get("model", {}).get("weights")
    html = _recipe(run.get("recipe")) + _budget(run.get("budget")) + _pruned(run.get("pruned"))
    if weights:
        new = weights["mismatched"] + weights["missing"]
        html += (f"<p>Weights: {weights['loaded']} tensors from "
                 f"{escape(weights['source'])}; newly initialised: "
                 f"{escape(', '.join(new) or 'none')}"
                 + (f"; {escape(', '.join(weights['adapted']))} summed over RGB for "
                    "greyscale input" if weights["adapted"] else "") + ".</p>")
    if run.get("lr_found"):
        html += (f"<p>Learning rate {run['lr_found']:.3g}, from the range test below "
                 "(<code>--lr auto</code>).</p>")
    return html


def _budget(budget: dict | None) -> str:
    """What --budget measured, planned and got: one paragraph and the probe's speeds."""
    if not budget:
        return ""
    rows = [[escape(name), f"{m['train_images_per_s']:,}", f"{m['eval_images_per_s']:,}",
             m["precision"]] for name, m in budget["measured"].items()]
    return (f"<p>Time budget {budget['seconds']:.0f} s (<code>--budget</code>): measured "
            f"{budget['planned_at_s']:.0f} s into the run, training planned for "
            f"{budget['training_seconds_planned']:.0f} s (about {budget['passes_planned']:g} "
            f"passes of {escape(budget['chosen'])}), ended at "
            f"{budget['training_ended_at_s']:.0f} s by {escape(budget['ended_by'])} after "
            f"{budget['epochs_run']} epochs; the whole run up to this report took "
            f"{budget['total_seconds']:.0f} s. The learning-rate schedule followed the clock, "
            "so a slower spell of the machine cost steps, not the annealing. Speeds measured "
            "on this machine (images/s):</p>"
            + html_table(["model", "training", "evaluation", "precision"], rows))


def _pruned(pruned: dict | None) -> str:
    """What imclass prune removed from the trained run before this fine-tuning."""
    if not pruned:
        return ""
    b, a = pruned["before"], pruned["after"]
    what = ("of every layer's channels removed (structured)" if pruned["structured"]
            else "of the convolution and linear weights set to zero (unstructured)")
    rows = [[label, f(b[key]), f(a[key])] for label, key, f in (
        ("parameters", "parameters", "{:,}".format),
        ("nonzero parameters", "nonzero_parameters", "{:,}".format),
        ("MFLOPs per image", "flops_per_image", lambda v: f"{v / 1e6:.1f}"),
        ("zero weights", "sparsity", lambda v: f"{v:.1%}"),
        ("validation accuracy", "val_acc", lambda v: "n/a" if v is None else f"{v:.2%}"))]
    return (f"<p>Pruned from <code>{escape(pruned['source'])}</code>: {pruned['amount']:g} "
            f"{what}, BatchNorm statistics measured again, then fine-tuned as below. "
            "Validation accuracy after pruning is before any fine-tuning:</p>"
            + html_table(["", "trained", "pruned"], rows))


def _recipe(recipe: dict | None) -> str:
    """What `--recipe auto` chose from the data, and that flags override it."""
    if not recipe or recipe.get("name") in (None, "none"):
        return ""
    chosen = recipe.get("chosen", {})
    rows = [[key, escape(str(value))] for key, value in chosen.items()]
    line = recipe["line"]
    return (f"<p>{escape(line[:1].upper() + line[1:])}. The settings below were chosen from the data "
            "because no flag or config key set them (<code>--recipe none</code> keeps the "
            "plain defaults):</p>" + html_table(["key", "chosen"], rows))


def _stages(run: dict) -> str:
    stages = run.get("stages", [])
    if len(stages) < 2:
        return ""
    return "<p>Training ran in stages (dotted lines in the curves):</p>" + html_table(
        ["stage", "first epoch", "epochs", "peak learning rate (head)", "lowest group's rate"],
        [[s["name"], s["first_epoch"], s["epochs"], f"{s['peak_lr']:.3g}",
          f"{s['lowest_lr']:.3g}"] for s in stages])


METRIC_ROWS = [("accuracy", "accuracy"),
               ("balanced_accuracy", "balanced accuracy (mean recall of the classes)"),
               ("top_3", "top-3 accuracy"),
               ("top_5", "top-5 accuracy"), ("precision_macro", "precision (macro)"),
               ("recall_macro", "recall (macro)"), ("f1_macro", "F1 (macro)"),
               ("precision_weighted", "precision (weighted)"),
               ("recall_weighted", "recall (weighted)"), ("f1_weighted", "F1 (weighted)"),
               ("roc_auc_macro", "ROC AUC (macro, one-vs-rest)"),
               ("roc_auc_micro", "ROC AUC (micro)"),
               ("average_precision_macro", "average precision (macro)"),
               ("ece", "expected calibration error")]


BINARY_ROWS = [("threshold", "decision threshold (see Training)"),
               ("accuracy_at_threshold", "accuracy at the threshold"),
               ("precision_at_threshold", "precision of the positive class"),
               ("recall_at_threshold", "recall of the positive class"),
               ("f1_at_threshold", "F1 of the positive class"), ("roc_auc", "ROC AUC"),
               ("pr_auc", "PR AUC (average precision)")]
HIERARCHY_ROWS = [("hierarchical_precision", "hierarchical precision"),
                  ("hierarchical_recall", "hierarchical recall"),
                  ("hierarchical_f1", "hierarchical F1")]
MULTILABEL_ROWS = [("subset_accuracy", "subset accuracy (every label right)"),
                   ("balanced_accuracy", "balanced accuracy (per label, the mean of the "
                                         "true positive and true negative rates)"),
                   ("label_accuracy", "label accuracy (1 - Hamming loss)"),
                   ("hamming_loss", "Hamming loss"), ("f1_micro", "F1 (micro)"),
                   ("f1_macro", "F1 (macro)"), ("precision_micro", "precision (micro)"),
                   ("recall_micro", "recall (micro)"), ("precision_macro", "precision (macro)"),
                   ("recall_macro", "recall (macro)"),
                   ("mean_average_precision", "mean average precision (mAP)"),
                   ("roc_auc_macro", "ROC AUC (macro)"), ("roc_auc_micro", "ROC AUC (micro)")]


def _metric_table(test: dict, tta: dict, rows) -> str:
    header = ["metric", "value"] + (["with flip TTA"] if tta else [])
    return html_table(header, [[label, test[key]] + ([tta.get(key)] if tta else [])
                               for key, label in rows if test.get(key) is not None])


def _multilabel_results(test: dict, tta: dict, plots: Path) -> str:
    html = _metric_table(test, tta, MULTILABEL_ROWS)
    html += "<h3>Per label</h3>" + html_table(
        ["label", "threshold", "precision", "recall", "F1", "support", "ROC AUC", "AP", "TP",
         "FP", "FN", "TN"],
        [[name, m["threshold"], m["precision"], m["recall"], m["f1"], m["support"],
          _na(m["auc"]), _na(m["average_precision"]), m["tp"], m["fp"], m["fn"], m["tn"]]
         for name, m in by_recall(test.get("per_class", {}))])
    return html + img_tag(plots / "labels.png", "per-label scores") + img_tag(
        plots / "label_confusion.png", "confusion matrix per label") + (
        '<div class="pair">' + img_tag(plots / "roc.png", "ROC curves per label")
        + img_tag(plots / "pr.png", "precision-recall curves per label") + "</div>")


def _na(v):
    return "n/a" if v is None else v


def by_recall(per_class: dict) -> list[tuple[str, dict]]:
    """The per-class (per-label) rows, lowest recall first: the classes that fare worst lead."""
    return sorted(per_class.items(), key=lambda item: item[1]["recall"])


def _results(test: dict, tta: dict, plots: Path, train_counts: dict | None = None) -> str:
    task = test.get("task", "multiclass")
    if task == "multilabel":
        return _multilabel_results(test, tta, plots)
    html = ""
    if task == "binary":
        html += (f"<p>Positive class: <b>{escape(str(test.get('positive_class')))}</b>; it is "
                 "predicted when its probability reaches the threshold.</p>"
                 + _metric_table(test, tta, BINARY_ROWS))
    if task == "hierarchical":
        html += _metric_table(test, tta, HIERARCHY_ROWS) + "<h3>Per level of the tree</h3>"
        html += html_table(["level", "nodes", "accuracy", "macro F1"],
                           [[level, m["nodes"], m["accuracy"], m["f1_macro"]]
                            for level, m in test.get("per_level", {}).items()])
        html += "<h3>Leaf classes</h3>"
    html += _metric_table(test, tta, METRIC_ROWS)
    train_counts = train_counts or {}
    html += "<h3>Per class, lowest recall first</h3>" + html_table(
        ["class", "recall", "precision", "F1", "test images", "training images", "ROC AUC",
         "AP"],
        [[name, m["recall"], m["precision"], m["f1"], m["support"],
          train_counts.get(name, "n/a"), _na(m["auc"]), _na(m.get("average_precision"))]
         for name, m in by_recall(test.get("per_class", {}))])
    confused = test.get("most_confused", [])
    if confused:
        html += "<h3>Most confused pairs</h3>" + html_table(
            ["true class", "predicted as", "images"],
            [[c["true"], c["predicted"], c["count"]] for c in confused])
    pairs = [(("confusion", "confusion matrix"),
              ("confusion_normalized", "normalized confusion matrix")),
             (("roc", "ROC curves"), ("pr", "precision-recall curves")),
             (("calibration", "reliability diagram"),)]
    for pair in pairs:
        html += '<div class="pair">' + "".join(img_tag(plots / f"{name}.png", alt)
                                               for name, alt in pair) + "</div>"
    return html


def _interpretation(plots: Path) -> str:
    return "".join(img_tag(plots / f"{name}.png", alt) for name, alt in (
        ("predictions", "sample predictions per class"), ("mistakes", "worst mistakes"),
        ("unsure", "least confident right answers"), ("gradcam", "Grad-CAM heatmaps"),
        ("embedding", "embedding of the test set")))


def build_report(run_dir: Path) -> str:
    run_dir = Path(run_dir)
    run = read_json(run_dir / "run.json")
    metrics = read_json(run_dir / "metrics.json")
    test, tta = metrics.get("test", {}), metrics.get("test_tta", {})
    plots = run_dir / "plots"
    analysis = read_json(run_dir / "analysis.json")
    config_path = run_dir / "config.yaml"
    config_text = config_path.read_text() if config_path.is_file() else ""
    versions = ", ".join(f"{k} {v}" for k, v in run.get("versions", {}).items())
    sections = [
        ("summary", "Summary", _summary(run, test)),
        ("data", "Data",
         _data_section(run.get("data", {}), analysis, plots, run.get("recipe"))),
        ("training", "Training", _training_section(run, plots)),
        ("results", "Results on the test set",
         _results(test, tta, plots, run.get("data", {}).get("counts", {}).get("train"))
         if test else "<p>Not evaluated.</p>"),
        ("interpretation", "Interpretation", _interpretation(plots)),
        ("reproduce", "Reproduce",
         f"<p>Command: <code>{escape(str(run.get('command') or 'imclass train --config config.yaml'))}"
         f"</code> (or <code>imclass train --config config.yaml</code> with this folder's "
         f"config).</p><p>Versions: {escape(versions)}. Hardware: "
         f"{escape(str(run.get('hardware')))}{_in_precision(run)}.</p>"
         f"<pre>{escape(config_text)}</pre>"),
    ]
    nav = " · ".join(f'<a href="#{key}">{escape(title)}</a>' for key, title, _ in sections)
    body = "\n".join(f'<h2 id="{key}">{escape(title)}</h2>{html}' for key, title, html in sections)
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>imclass report: {escape(run_dir.name)}</title><style>{STYLE}</style>"
            f"</head><body><h1>imclass run: {escape(run_dir.name)}</h1>"
            f'<p class="sub">{nav}</p>{body}</body></html>\n')


def write_report(run_dir: Path) -> Path:
    path = Path(run_dir) / "report.html"
    atomic_write_text(path, build_report(run_dir))
    return path
