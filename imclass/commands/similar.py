"""`imclass similar RUN_DIR IMAGE...`: for each query image, the k training images nearest
it by the model's features (imclass.similarity), as JSON, one PNG gallery per query and a
page showing them all."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from imclass import plots
from imclass.atomic import atomic_write_text
from imclass.commands.predict import collect
from imclass.similarity import FOLDER, Searcher


def similar(run_dir: str | Path, inputs, k: int = 8, out: str | Path | None = None,
            log=lambda m: None) -> tuple[list[dict], Path]:
    """The neighbours of every query (files, folders, globs, CSVs of paths) and the folder
    with their galleries and similar.html."""
    searcher = Searcher(run_dir, log=log)
    results = searcher.search(collect(inputs), k)
    folder = Path(out) if out else Path(run_dir) / FOLDER / "queries"
    folder.mkdir(parents=True, exist_ok=True)
    for n, result in enumerate(results):
        pixels = result.pop("pixels", None)
        if pixels is not None:
            result["gallery"] = str(gallery(folder / f"query{n + 1:03d}.png", pixels,
                                            result, searcher))
    atomic_write_text(folder / "similar.html", page(results, folder))
    return results, folder


def gallery(path: Path, query: np.ndarray, result: dict, searcher: Searcher) -> Path:
    """The query, then its neighbours with their labels and similarity."""
    rows = [n["row"] for n in result["neighbours"]]
    images = np.concatenate([query[None], searcher.index.pixels(rows)])
    captions = ["query"] + [f"{label_text(n['label'])}\n{n['similarity']:.3f}"
                            for n in result["neighbours"]]
    return plots.captioned_grid(images, range(len(images)), captions, [False] * len(images),
                                f"nearest training images to {Path(result['image']).name}",
                                path, columns=min(9, len(images)))


def label_text(label) -> str:
    return ", ".join(label) if isinstance(label, list) else str(label)


def page(results: list[dict], folder: Path) -> str:
    parts = []
    for r in results:
        if "error" in r:
            parts.append(f"<h2>{html.escape(r['image'])}</h2><p>{html.escape(r['error'])}</p>")
            continue
        rows = "".join(f"<tr><td>{html.escape(str(n['image']))}</td><td>"
                       f"{html.escape(label_text(n['label']))}</td><td>{n['similarity']:.3f}"
                       "</td></tr>" for n in r["neighbours"])
        parts.append(f"<h2>{html.escape(r['image'])}</h2><img src=\""
                     f"{html.escape(Path(r['gallery']).relative_to(folder).as_posix())}\" "
                     f"alt=\"neighbours\" style=\"max-width:100%\"><table><tr><th>image</th>"
                     f"<th>label</th><th>cosine similarity</th></tr>{rows}</table>")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>imclass "
            "similar</title></head><body style=\"font-family:sans-serif\"><h1>Nearest "
            f"training images</h1>{''.join(parts)}</body></html>\n")
