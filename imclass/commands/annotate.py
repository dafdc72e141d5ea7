"""`imclass annotate FOLDER`: label a folder of images in the browser, with a model helping.

The page (imclass/web/annotate.html) shows the images one at a time or as a grid; keys 1-9 or
a class's first letter label the image, Enter takes the model's suggestion, Space skips,
Backspace undoes. Every label is in FOLDER/labels.csv before the click is answered
(imclass.labelstore); the model learns in a background thread (imclass.assistant) and the
next images are those it is least sure of. The review queue lists the labels the model's
out-of-fold predictions doubt and the near-duplicate images.

Routes: `/` the page; `GET /api/state`; `GET /api/queue?filter=&mode=&limit=`;
`GET /api/changes?since=` (what other tabs changed, and the state); `POST /api/label`
{name, labels, version} (409 with the labels now held when another tab changed the image);
`POST /api/dismiss` {name} (a review item judged fine); `GET /image/{name}` a preview.
Names are the images' paths relative to the folder; anything else is refused (404), and a
path leaving the folder 403. Beyond this machine (`--host 0.0.0.0`) every route needs the
session's token (`?token=` in the printed address, or the X-Token header).
"""

from __future__ import annotations

import hmac
import io
import json
import secrets
import sys
import threading
from collections import OrderedDict
from importlib import resources
from pathlib import Path, PurePosixPath

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel

from imclass.assistant import Helper
from imclass.atomic import atomic_write_text
from imclass.data.decode import to_8bit, inspect_all
from imclass.labelstore import Conflict, LabelStore

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_FILE_MB = 50  # larger files are listed as bad, not shown (a preview would stall the page)
PREVIEW_SIDE = 512  # px: the longest side of the image the page is sent
PREVIEWS_KEPT = 512  # previews held in memory, the most recent


class Label(BaseModel):
    name: str
    labels: list[str]
    version: int  # the version of the image's labels this change was made on


class Dismiss(BaseModel):
    name: str


class Session:
    """A store, its background model, the files that cannot be used, the review decisions."""

    def __init__(self, folder: str | Path, classes: list[str] | None, multilabel: bool,
                 cache_dir: Path, log=lambda m: None, minimum: int | None = None,
                 seed: int = 0):
        self.store = LabelStore(folder, classes, multilabel)
        infos = inspect_all([str(i.path) for i in self.store.items])
        self.infos = {item.name: too_big(info) for item, info in zip(self.store.items, infos)}
        extra = {} if minimum is None else {"minimum": minimum}
        self.helper = Helper(self.store, self.infos, cache_dir, seed=seed, log=log, **extra)
        self.reviewed_file = self.store.state / "reviewed.json"
        self.reviewed = set(json.loads(self.reviewed_file.read_text())) \
            if self.reviewed_file.is_file() else set()
        self._previews: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self._preview_lock = threading.Lock()

    def bad(self) -> list[dict]:
        found = {n: i["error"] for n, i in self.infos.items() if "error" in i}
        found |= self.helper.failed
        return [{"name": n, "reason": r} for n, r in sorted(found.items())]

    def item(self, name: str, note: str | None = None) -> dict:
        item = self.store.by_name[name]
        out = {"name": name, "labels": list(item.labels), "version": item.version,
               "suggestion": self.helper.suggestion(name)}
        return out | ({"note": note} if note else {})

    def state(self) -> dict:
        store, helper = self.store, self.helper
        usable = len(helper.names) - len(helper.failed)
        return {"folder": str(store.folder), "classes": store.classes,
                "multilabel": store.multilabel, "images": usable,
                "labelled": sum(1 for n in helper.names if store.by_name[n].labels
                                and n not in helper.failed),
                "counts": store.counts(), "model": helper.status,
                "trained": helper.scores is not None, "seq": store.seq, "bad": self.bad(),
                "review": len(self.review())}

    def review(self) -> list[tuple[str, str]]:
        """(name, why) of the doubted labels and the near-duplicates not yet judged fine."""
        out, by = [], self.store.by_name
        for name in self.helper.doubts:
            if name not in self.reviewed and by[name].labels:
                suggested = self.helper.suggestion(name)
                said = ", ".join(suggested["labels"]) if suggested else "?"
                out.append((name, f"labelled {', '.join(by[name].labels)}; the model, "
                                  f"not trained on it, says {said}"))
        for name, other, bits in self.helper.duplicates:
            if name not in self.reviewed:
                labels = ", ".join(by[other].labels) or "no label"
                kind = "the same file as" if bits == 0 else "looks like"
                out.append((name, f"{kind} {other} ({labels})"))
        return out

    def queue(self, view: str, mode: str, limit: int) -> list[dict]:
        names: list[tuple[str, str | None]]
        if view == "review":
            names = self.review()
        elif view == "all":
            names = [(n, None) for n in self.helper.names]
        elif view.startswith("class:"):
            label = view.split(":", 1)[1]
            names = [(n, None) for n in self.helper.names
                     if label in self.store.by_name[n].labels]
        elif view.startswith("suggested:"):
            names = [(n, None) for n in self.helper.suggested(view.split(":", 1)[1])]
        else:
            names = [(n, None) for n in self.helper.unlabelled(mode)]
        return [self.item(n, note) for n, note in names[:limit]]

    def dismiss(self, name: str) -> None:
        self.reviewed.add(name)
        atomic_write_text(self.reviewed_file, json.dumps(sorted(self.reviewed)))

    def preview(self, name: str) -> tuple[bytes, str]:
        """(bytes, media type) of the image at most PREVIEW_SIDE px a side, PNG (small images
        keep every pixel) or JPEG (photos)."""
        with self._preview_lock:
            if name in self._previews:
                self._previews.move_to_end(name)
                return self._previews[name]
        from PIL import Image, ImageOps

        with Image.open(self.store.by_name[name].path) as img:
            img = ImageOps.exif_transpose(img)
            img.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
            small = max(img.size) <= 128
            img = to_8bit(img, 1 if img.mode in ("L", "1") or img.mode.startswith("I")
                           else 3)
            out = io.BytesIO()
            img.save(out, "PNG" if small else "JPEG", quality=85)
        found = (out.getvalue(), "image/png" if small else "image/jpeg")
        with self._preview_lock:
            self._previews[name] = found
            if len(self._previews) > PREVIEWS_KEPT:
                self._previews.popitem(last=False)
        return found

    def close(self) -> None:
        self.helper.stop()
        self.store.close()


def too_big(info: dict) -> dict:
    if "error" not in info and info.get("bytes", 0) > MAX_FILE_MB * 2 ** 20:
        return info | {"error": f"over {MAX_FILE_MB} MB; make it smaller to label it here"}
    return info


def create_app(session: Session, token: str | None = None):
    """The FastAPI application over a session (the tests build it directly too)."""
    app = FastAPI(title="imclass annotate", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if token:
            given = request.headers.get("x-token") or request.query_params.get("token") or ""
            if not hmac.compare_digest(given, token):
                return JSONResponse({"detail": "this page needs the session's token: open "
                                     "the address imclass annotate printed"}, status_code=401)
        try:
            return await call_next(request)
        except Exception as exc:  # never a traceback to the page; the console has it
            print(f"imclass annotate: {request.url.path}: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            return JSONResponse({"detail": "the server failed on this request; its console "
                                 "says why"}, status_code=500)

    def known(name: str) -> str:
        pure = PurePosixPath(name)
        if pure.is_absolute() or ".." in pure.parts or "\\" in name:
            raise HTTPException(403, f"{name!r} leads outside the folder being labelled")
        if name not in session.store.by_name:
            raise HTTPException(404, f"{name!r} is not an image of this folder")
        return name

    @app.get("/", response_class=HTMLResponse)
    def page():
        return resources.files("imclass").joinpath("web/annotate.html").read_text("utf-8")

    @app.get("/api/state")
    def state():
        return session.state()

    @app.get("/api/queue")
    def queue(filter: str = "unlabelled", mode: str = "active", limit: int = 60):
        if mode not in ("active", "plain"):
            raise HTTPException(422, "mode is active or plain")
        return session.queue(filter, mode, max(1, min(limit, 500)))

    @app.get("/api/changes")
    def changes(since: int = 0):
        items = [session.item(i.name) for i in session.store.changes(since)]
        return {"items": items, "state": session.state()}

    @app.post("/api/label")
    def label(body: Label):
        try:
            item = session.store.set(known(body.name), body.labels, body.version)
        except Conflict as exc:
            return JSONResponse({"detail": f"{body.name} was changed in another tab",
                                 "item": session.item(exc.item.name)}, status_code=409)
        except ValueError as exc:
            raise HTTPException(422, str(exc))
        session.helper.notify()
        return session.item(item.name)

    @app.post("/api/dismiss")
    def dismiss(body: Dismiss):
        session.dismiss(known(body.name))
        return {"dismissed": body.name}

    @app.get("/image/{name:path}")
    def image(name: str):
        error = session.infos.get(known(name), {}).get("error")
        if error:
            raise HTTPException(415, f"{name}: {error}")
        try:
            data, media = session.preview(name)
        except Exception as exc:  # a file that broke since it was inspected
            raise HTTPException(415, f"{name}: cannot be shown ({type(exc).__name__})")
        return Response(data, media_type=media, headers={"Cache-Control": "max-age=3600"})

    return app


def annotate(folder: str, *, classes: list[str] | None = None, multilabel: bool = False,
             host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
             cache_dir: Path, minimum: int | None = None) -> None:
    import uvicorn

    from imclass.commands.serve import check_port

    check_port(host, port)
    session = Session(folder, classes, multilabel, cache_dir, minimum=minimum,
                      log=lambda m: print(f"imclass annotate: {m}", file=sys.stderr, flush=True))
    if host not in LOCAL_HOSTS and not token:
        token = secrets.token_urlsafe(16)
    state = session.state()
    address = f"http://{host}:{port}/" + (f"?token={token}" if token else "")
    print(f"imclass annotate: {state['labelled']} of {state['images']} images of "
          f"{session.store.folder} labelled ({', '.join(session.store.classes)}); labels go "
          f"to {session.store.csv_file}; open {address}", file=sys.stderr, flush=True)
    if state["bad"]:
        print(f"imclass annotate: {len(state['bad'])} files cannot be used (the page lists "
              f"them), e.g. {state['bad'][0]['name']}: {state['bad'][0]['reason']}",
              file=sys.stderr, flush=True)
    session.helper.start()
    try:
        uvicorn.run(create_app(session, token), host=host, port=port, log_level="warning")
    finally:
        session.close()
