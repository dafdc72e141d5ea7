"""`imclass serve`: a model over HTTP (FastAPI on uvicorn) with a web page at `/`.

- `POST /predict`: one or several images (multipart field `files`) -> what `imclass predict
  --json` prints for them; `GET /model`: classes, task, input, the run's test figures;
  `GET /health`; the OpenAPI page at `/docs` (Swagger UI served from the swagger-ui-bundle
  package, so it works offline like the page).
- Requests arriving together share one forward pass (`Batcher`): each waits at most
  `max_wait_ms` for others, up to `max_batch` images; one thread runs the model, so memory is
  bounded and the model is never called concurrently. Decoding runs in Starlette's threads.
- Bad input is a 4xx with one sentence: a body over `--max-upload-mb` 413 (counted as it
  arrives, whatever Content-Length says), a file that is not an image 415, one over Pillow's
  pixel limit 422, a missing or wrong API key 401. Nothing else leaves a traceback to the client.
- With `--api-key`, `/predict` and `/model` need the header `X-API-Key` (the OpenAPI page
  shows it as the API's security scheme); `/health`, the page, `/docs` and the OpenAPI
  description hold nothing of the model and stay open.
"""

from __future__ import annotations

import asyncio
import hmac
from contextlib import asynccontextmanager
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import numpy as np
from fastapi import Depends, FastAPI, File, HTTPException, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from swagger_ui_bundle import swagger_ui_path

from imclass.data.decode import TOO_LARGE
from imclass.errors import ConfigError, DataError
from imclass.predictor import Predictor, load

class Batcher:
    """Collects images from concurrent requests into batches for one model thread."""

    def __init__(self, predictor: Predictor, max_batch: int, max_wait_ms: float):
        self.predictor, self.max_batch, self.max_wait = predictor, max_batch, max_wait_ms / 1e3
        self.queue: asyncio.Queue | None = None
        self.model_thread = ThreadPoolExecutor(1, thread_name_prefix="imclass-model")
        self.batch_sizes: list[int] = []  # for the load benchmark: how well batching works

    async def probabilities(self, pixels: list[np.ndarray]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in pixels]
        for p, f in zip(pixels, futures):
            self.queue.put_nowait((p, f))
        return np.stack(await asyncio.gather(*futures))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            deadline = loop.time() + self.max_wait
            while len(items) < self.max_batch:
                try:
                    items.append(await asyncio.wait_for(self.queue.get(),
                                                        max(0.0, deadline - loop.time())))
                except asyncio.TimeoutError:
                    break
            self.batch_sizes.append(len(items))
            try:
                probs = await loop.run_in_executor(self.model_thread, self.predictor.probabilities,
                                                   np.stack([p for p, _ in items]))
            except Exception as exc:  # the model failed: every waiting request hears why
                for _, f in items:
                    f.set_exception(exc)
                continue
            for (_, f), row in zip(items, probs):
                if not f.done():
                    f.set_result(row)


class BodyLimit:
    """ASGI middleware: 413 once a request body passes `limit` bytes (chunked bodies too)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared and declared.isdigit() and int(declared) > self.limit:
            return await too_large(self.limit)(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLarge()
            return message
        try:
            await self.app(scope, counted, send)
        except BodyTooLarge:
            await too_large(self.limit)(scope, receive, send)


class BodyTooLarge(Exception):
    pass


def too_large(limit: int):
    return JSONResponse({"detail": f"the upload is over the server's limit of "
                         f"{limit / 2 ** 20:g} MB (--max-upload-mb)"}, status_code=413)


def page() -> str:
    return resources.files("imclass").joinpath("web/index.html").read_text(encoding="utf-8")


def create_app(predictor: Predictor, *, api_key: str | None = None, max_upload_mb: float = 20,
               max_batch: int = 32, max_wait_ms: float = 5, top_k: int = 3):
    """The FastAPI application (the tests and the load benchmark build it directly too)."""
    batcher = Batcher(predictor, max_batch, max_wait_ms)

    @asynccontextmanager
    async def lifespan(app):
        batcher.queue = asyncio.Queue()
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()
        batcher.model_thread.shutdown(wait=False)

    app = FastAPI(title="imclass", docs_url=None, redoc_url=None, lifespan=lifespan,
                  description=f"{predictor.contract.task} classifier over "
                  f"{len(predictor.class_names)} classes, from {Path(predictor.source).name}")
    app.openapi_version = "3.0.3"  # what the bundled Swagger UI 4 renders
    app.state.batcher = batcher
    app.mount("/static/swagger", StaticFiles(directory=str(swagger_ui_path)), name="swagger")

    key_header = APIKeyHeader(name="X-API-Key", auto_error=False)

    def require_key(given: str | None = Security(key_header)) -> None:
        if api_key and not hmac.compare_digest(given or "", api_key):
            raise HTTPException(401, "missing or wrong API key: send it in the X-API-Key "
                                "header")

    @app.middleware("http")
    async def no_tracebacks(request: Request, call_next):
        try:
            return await call_next(request)
        except BodyTooLarge:
            raise  # BodyLimit answers it with 413
        except Exception as exc:  # never a traceback to the client; the server log has it
            print(f"imclass serve: {request.url.path}: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            return JSONResponse({"detail": "the server failed on this request; its log says "
                                 "why"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def no_files(request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": "send one or more images as multipart/form-data in "
                             "the field 'files'"}, status_code=422)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index():
        return page()

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="imclass API",
                                   swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger/swagger-ui.css",
                                   swagger_favicon_url="data:,")

    @app.get("/health")
    def health():
        """Up, and how many images and forward passes it has served (batching at work)."""
        return {"status": "ok", "images": sum(batcher.batch_sizes),
                "batches": len(batcher.batch_sizes)}

    @app.get("/model", dependencies=[Depends(require_key)])
    def model():
        return {**predictor.contract.describe(), "backend": predictor.backend,
                "source": Path(predictor.source).name, "top_k": top_k,
                "max_upload_mb": max_upload_mb}

    searcher: dict = {}  # built on the first /similar request (indexing takes a while)
    searcher_lock = threading.Lock()

    def get_searcher():
        with searcher_lock:
            if "it" not in searcher:
                from imclass.similarity import Searcher  # torch: only for /similar

                searcher["it"] = Searcher(predictor.source, log=lambda m: print(
                    f"imclass serve: {m}", file=sys.stderr, flush=True))
            return searcher["it"]

    async def similar(files: list[UploadFile] = File(...), k: int = 8):
        """The k training images nearest each uploaded image by the model's features; an
        image that cannot be read gets an "error" in its place (all unreadable: 415)."""
        if not 1 <= k <= 100:
            raise HTTPException(422, "k must be between 1 and 100")
        found = await run_in_threadpool(get_searcher)
        datas = [await u.read() for u in files]
        results = await run_in_threadpool(found.search, datas, k)
        failures = [(415, f"{u.filename or 'the upload'}: {r['error']}")
                    for u, r in zip(files, results) if "error" in r]
        per_file(failures, len(files))
        return [{"image": u.filename, **({"error": r["error"]} if "error" in r
                                         else {"neighbours": r["neighbours"]})}
                for u, r in zip(files, results)]

    if Path(predictor.source).is_dir():  # it needs the run folder's training images
        app.post("/similar", dependencies=[Depends(require_key)])(similar)

    @app.post("/predict", dependencies=[Depends(require_key)])
    async def predict(files: list[UploadFile] = File(...)):
        """Top-k classes and the decision for each uploaded image, in order; an image that
        cannot be read gets an "error" in its place (every one unreadable: 415 or 422)."""
        pixels, errors = [], {}
        for n, upload in enumerate(files):
            data = await upload.read()
            try:
                pixels.append(await run_in_threadpool(predictor.pixels, data))
            except DataError as exc:
                errors[n] = (422 if str(exc) == TOO_LARGE else 415, str(exc))
        per_file([(status, f"{files[n].filename or 'the upload'}: {message}")
                  for n, (status, message) in errors.items()], len(files))
        probs = await batcher.probabilities(pixels)
        decided = iter(predictor.decisions(probs, top_k))
        return [{"image": u.filename, **({"error": errors[n][1]} if n in errors
                                         else next(decided))}
                for n, u in enumerate(files)]

    return BodyLimit(app, int(max_upload_mb * 2 ** 20))


def per_file(failures: list[tuple[int, str]], files: int) -> None:
    """A request whose every file failed is refused with the first failure's status (415 not
    an image, 422 too large); otherwise each file is answered on its own."""
    if failures and len(failures) == files:
        raise HTTPException(*failures[0])


def serve(model: str, *, host: str = "127.0.0.1", port: int = 8000, backend: str | None = None,
          api_key: str | None = None, max_upload_mb: float = 20, max_batch: int = 32,
          max_wait_ms: float = 5, top_k: int = 3) -> None:
    import uvicorn

    check_port(host, port)
    predictor = load(model, backend)
    app = create_app(predictor, api_key=api_key, max_upload_mb=max_upload_mb,
                     max_batch=max_batch, max_wait_ms=max_wait_ms, top_k=top_k)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        print("imclass serve: listening beyond this machine without --api-key: anyone who "
              "can reach the port can use the model", file=sys.stderr)
    routes = "/predict, /similar" if Path(predictor.source).is_dir() else "/predict"
    print(f"imclass serve: {predictor.backend} model {model} on http://{host}:{port}/ "
          f"(API: {routes}, /model, /health; docs: /docs)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def check_port(host: str, port: int) -> None:
    """Refuse a port that cannot be bound in one line, before the model loads."""
    import socket

    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind((host, port))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose "
                          "another --port or --host") from None
