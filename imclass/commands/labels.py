"""`imclass labels DATA`: the images whose given label is most likely wrong
(imclass.label_issues), written for a person to review and correct:

- label_issues.csv: ranked, likeliest first: image, its CSV line (CSV datasets), split,
  given label, suggested label,
  self-confidence (the fold model's probability for the given label), its probability for
  the suggestion;
- review.html: each image large, given against suggested, a filter by class;
- out_of_fold.npz: the out-of-fold probabilities, given labels, image names and classes;
- corrections.csv: one row per issue, action relabel with the suggestion filled in; edit the
  actions (relabel, exclude or keep) and labels, then `imclass train --relabel corrections.csv
  --exclude corrections.csv`.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from pathlib import Path

import numpy as np
from PIL import Image

from imclass.atomic import atomic_write, atomic_write_text
from imclass.config import RunConfig
from imclass.label_issues import Audit, audit

ISSUE_COLUMNS = ("rank", "image", "csv_row", "split", "given", "suggested", "self_confidence",
                 "suggested_probability")


def labels(config: RunConfig, out: str | Path, folds: int = 5, log=lambda m: None
           ) -> tuple[list[dict], Path]:
    """Audit the dataset of `config`; the ranked issues and the folder they were written to."""
    found = audit(config, folds, log)
    issues = rows_of(found)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "label_issues.csv", ISSUE_COLUMNS, issues)
    write_csv(out / "corrections.csv", ("image", "action", "given", "new_label"),
              [{"image": i["image"], "action": "relabel", "given": i["given"],
                "new_label": i["suggested"]} for i in issues])
    atomic_write_text(out / "review.html", review_page(found, issues))
    # the evidence behind the ranking, for a second look with other tools (cleanlab's own)
    atomic_write(out / "out_of_fold.npz", lambda tmp: save_evidence(tmp, found))
    log(f"labels: {len(issues)} of {len(found.images)} images look mislabelled; review "
        f"{out / 'review.html'}, edit {out / 'corrections.csv'}, then imclass train "
        f"--relabel {out / 'corrections.csv'} --exclude {out / 'corrections.csv'}")
    return issues, out


def label_text(images, row: int, values) -> str:
    names = images.class_names
    if images.task == "multilabel":
        return ";".join(names[k] for k in np.flatnonzero(values[row] > 0.5))
    return names[int(values[row])]


def rows_of(found: Audit) -> list[dict]:
    images, probs = found.images, found.probs
    given = images.labels.numpy()
    out = []
    for rank, i in enumerate(found.ranked, start=1):
        if images.task == "multilabel":
            suggested = ";".join(images.class_names[k] for k in np.flatnonzero(probs[i] >= 0.5))
            confidence = float(np.mean(np.where(given[i] > 0.5, probs[i], 1 - probs[i])))
            suggested_p = float(np.mean(np.maximum(probs[i], 1 - probs[i])))
        else:
            suggested = images.class_names[int(probs[i].argmax())]
            confidence, suggested_p = float(probs[i, given[i]]), float(probs[i].max())
        out.append({"rank": rank, "image": found.ids[i], "csv_row": found.csv_rows[i] or "",
                    "split": found.splits[i],
                    "given": label_text(images, i, given), "suggested": suggested,
                    "self_confidence": round(confidence, 4),
                    "suggested_probability": round(suggested_p, 4), "index": int(i)})
    return out


def save_evidence(path: Path, found: Audit) -> None:
    with open(path, "wb") as fh:  # np.savez given a name would add ".npz" to it
        np.savez(fh, probabilities=found.probs, labels=found.images.labels.numpy(),
                 images=np.array(found.ids), classes=np.array(found.images.class_names))


def write_csv(path: Path, columns, rows: list[dict]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    atomic_write(path, write)


def png_data(pixels: np.ndarray, side: int = 160) -> str:
    img = Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))
    img = img.resize((side, side), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def review_page(found: Audit, issues: list[dict]) -> str:
    """One self-contained page: a card per issue, filterable by given class."""
    cards = []
    for i in issues:
        pixels = found.images.pixels(i["index"])
        cards.append(
            f'<div class="card" data-given="{html.escape(i["given"])}"><img src="data:image/png;'
            f'base64,{png_data(pixels)}" alt="{html.escape(i["image"])}"><p><b>#{i["rank"]}</b> '
            f'{html.escape(i["image"])} ({i["split"]})</p><p>given: <b>{html.escape(i["given"])}'
            f'</b> ({i["self_confidence"]:.2f})<br>suggested: <b>{html.escape(i["suggested"])}'
            f'</b> ({i["suggested_probability"]:.2f})</p></div>')
    options = "".join(f"<option>{html.escape(c)}</option>"
                      for c in sorted({i["given"] for i in issues}))
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>imclass "
            "labels</title><style>body{font-family:sans-serif} .card{display:inline-block;"
            "width:190px;vertical-align:top;margin:6px;padding:6px;border:1px solid #ccc}"
            ".card p{font-size:.8em;margin:.3em 0}</style></head><body><h1>Likely label "
            f"errors</h1><p>{len(issues)} of {len(found.images)} images, likeliest first, "
            f"from {found.folds}-fold out-of-fold predictions and confident learning "
            "(cleanlab). Given label (the fold model's probability for it) against the "
            "suggested one.</p><p>Given class: <select id=\"given\"><option value=\"\">all"
            f"</option>{options}</select></p><div id=\"cards\">{''.join(cards)}</div><script>"
            "document.getElementById('given').onchange=function(e){for(const c of document."
            "querySelectorAll('.card')){c.style.display=(!e.target.value||c.dataset.given==="
            "e.target.value)?'':'none';}};</script></body></html>\n")
