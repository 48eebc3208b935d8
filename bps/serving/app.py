"""HTTP prediction service: the ``bps.serving.predictor`` results for uploaded TIFFs, over HTTP.

    python -m bps serve models/lenet --host 127.0.0.1 --port 8000
    curl -F files=@a.tif -F files=@b.tif http://127.0.0.1:8000/predict

* ``GET /health`` → ``{"status": "ok"}`` once the model is loaded.
* ``GET /model`` → what the model predicts and how it was built (from its ``model.json``).
* ``POST /predict`` (multipart, one or more ``files``) → ``{"predictions": [{"file", "predicted",
  "probabilities": {class: p}}]}``, in upload order, with the CLI's preprocessing and numbers.
  A model trained on a layout takes each sample's channel files (PNG or TIFF) one after another,
  in the order ``GET /model`` lists (``input.channel_files``), and answers once per sample;
  a multi-label model's ``predicted`` is its labels over their thresholds, space-separated.

Every client error is a 4xx with ``{"detail": message}`` naming the file and the problem; the
whole request fails on the first bad file, as the CLI does:

* 400: an empty file; 408: a body not received within ``body_timeout`` seconds; 413: a request
  body over ``max_request_bytes`` (refused before any multipart parsing), an image side over
  ``max_image_side``, or files whose headers declare more than ``max_request_pixels`` in all
  (both read from the headers, before any pixel is decoded); 415: not a TIFF (a layout model's
  channel file: not a PNG or TIFF), pixels that are not integers, or a compression other than
  none/LZW/Deflate/PackBits/Zstd (image codecs such as PNG or JPEG carry their own, unbounded,
  size); 422: no files, not one 2-D single-channel page, undecodable pixel data (a stream that
  decodes past its declared size, or a PNG cut short, included), or a file count that is not a
  whole number of samples; 503: the server is full (``max_pending`` requests, ``max_inflight_bytes``
  of bodies, or ``max_inflight_pixels`` of declared pixels already in progress), with ``Retry-After``.

Memory is bounded by admission, not by luck: bodies in progress never exceed
``max_inflight_bytes`` in total (uploads past 1 MiB a file are spooled to disk by the multipart
parser, and files are decoded from there, not copied). CPU is bounded by pixels, not bytes (a
2.5 kB TIFF can declare a megapixel): a request's declared pixels are summed from the headers
first, and the requests admitted to decode never declare more than ``max_inflight_pixels`` in
total; at most ``workers`` requests decode and predict at once; the others wait their turn with
their bodies already received.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import numpy as np
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bps.core.errors import PipelineError
from bps.data.images import (
    CompressionError,
    ImageError,
    ImageShapeError,
    ImageTooLargeError,
    NotATiffError,
    PixelTypeError,
)
from bps.data.layouts.channels import NotAPngError
from bps.serving.predictor import Predictor

MAX_REQUEST_BYTES = 32 * 2**20  # a nucleus crop is ~10-60 kB: hundreds of crops per request
MAX_IMAGE_SIDE = 1024  # crops are ~90-260 px a side; a whole field of view is a mistake
MAX_PENDING = 16  # requests with a body admitted at once (receiving, waiting or working)
MAX_INFLIGHT_BYTES = 128 * 2**20  # their bodies, in total: four maximum-size requests
WORKERS = 2  # requests decoded and predicted at once: one per core of a small machine
# Decoding costs by the pixel, not by the byte: a 2.5 kB Deflate TIFF (or a PNG) declares 1024×1024,
# ~34 ms of one core. Declared pixels are read from the headers before any decoding.
MAX_REQUEST_PIXELS = 16 * 2**20  # ~250 crops of 256×256 (~700 typical ones), or 16 of 1024×1024: ~0.5 s
MAX_INFLIGHT_PIXELS = 64 * 2**20  # the requests admitted to decode (working or waiting), in total
BODY_TIMEOUT = 30.0  # seconds from the headers to the last body byte: 32 MiB at ~1 MiB/s

class Prediction(BaseModel):
    file: str
    predicted: str
    probabilities: dict[str, float]


class Predictions(BaseModel):
    predictions: list[Prediction]


class ErrorDetail(BaseModel):
    """Every 4xx/5xx this service sends: one line naming the file (if any) and the problem."""

    detail: str


# The schema declares what /predict really answers (not FastAPI's default 422 list of objects).
PREDICT_ERRORS = {
    400: "an empty file, or a malformed multipart body",
    408: "the body did not arrive within the body timeout",
    413: "the body is over the request limit, an image side over the side limit, or the images' declared pixels "
         "over the request's pixel limit",
    415: "not a TIFF, non-integer pixels, or a compression other than none/LZW/Deflate/PackBits/Zstd",
    422: "no files, not one 2-D single-channel page, undecodable pixel data, or not a whole number of samples",
    503: "the server is full (pending requests, bytes or pixels in flight); retry after Retry-After seconds",
}


# --- the model -------------------------------------------------------------------------------


def describe_model(predictor: Predictor) -> dict[str, Any]:
    """The model card grouped for clients: what it predicts, how it was built, how well it did."""
    card = predictor.card
    description = {
        "name": predictor.folder.name,
        "kind": card.kind,
        "target": card.target,
        "classes": card.classes,
        "architecture": card.architecture,
        "input": {"channels": card.in_channels, "size": card.image_size},
        "preprocess": card.preprocess.model_dump(mode="json"),
        "training": card.training,
        "metrics": card.metrics,
    }
    if card.channels is not None:  # a layout's model: which file is which channel, and how labels are chosen
        description["input"]["channel_files"] = card.channels
        description |= {"multilabel": card.multilabel, "thresholds": card.thresholds}
    return description


# --- one upload to one model input -----------------------------------------------------------


OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")  # repr() of an object: its type and memory address
# The HTTP status for each way an upload can be unusable (bps.data.images decides which it is; a
# subclass gets its nearest listed ancestor's).
IMAGE_ERROR_STATUS: dict[type[ImageError], int] = {
    NotATiffError: 415,
    NotAPngError: 415,
    PixelTypeError: 415,
    CompressionError: 415,
    ImageTooLargeError: 413,
    ImageShapeError: 422,
    ImageError: 422,
}


class ModelService:
    """The loaded model, its input limits, and the locks that bound the work in progress.

    At most ``workers`` requests decode and predict at once (each holds one decoded image at a
    time); the model lock keeps one batch at a time on the model (GPU memory, CPU threads) while
    decoding, the slower part for small batches, runs in parallel.
    """

    def __init__(self, predictor: Predictor, max_image_side: int, workers: int = WORKERS,
                 max_request_pixels: int = MAX_REQUEST_PIXELS, max_inflight_pixels: int = MAX_INFLIGHT_PIXELS) -> None:
        self.predictor = predictor
        self.max_request_pixels = max_request_pixels
        self.max_inflight_pixels = max(max_inflight_pixels, max_request_pixels)  # one maximum request always fits
        self.inflight_pixels = 0  # guarded by _budget: requests run in worker threads
        self._budget = threading.Lock()
        self.server_paths = sorted({str(predictor.folder), str(predictor.folder.resolve())}, key=len, reverse=True)
        self.max_image_side = max_image_side
        self._workers = threading.BoundedSemaphore(workers)
        self._lock = threading.Lock()

    def prepare(self, sample: list[tuple[str, BinaryIO]]) -> np.ndarray:
        """One sample's uploaded files → one C×size×size uint8 input, exactly as the CLI prepares it."""
        try:
            return self.predictor.prepare_sample([stream for _, stream in sample], [name for name, _ in sample],
                                                 self.max_image_side)
        except ImageError as error:
            raise self.refusal(error) from None

    def refusal(self, error: ImageError) -> HTTPException:
        """The 4xx for an unusable image (its nearest listed class's status), with a public message."""
        status = next(IMAGE_ERROR_STATUS[kind] for kind in type(error).__mro__ if kind in IMAGE_ERROR_STATUS)
        return HTTPException(status, self.public(str(error)))

    def public(self, detail: str) -> str:
        """An error line for a client: the model folder by its name, not its server path, and no
        object addresses (a decoder's message may name the spooled upload as ``<... at 0x7f...>``)."""
        for path in self.server_paths:
            detail = detail.replace(path, f"model {self.predictor.folder.name}")
        return OBJECT_REPR.sub("the upload", detail)

    def declared_pixels(self, uploads: list[tuple[str, BinaryIO]]) -> int:
        """The pixels the uploads' headers declare, refused (413) over the request's share before any
        decoding; a header that is not an image is refused as decoding would refuse it."""
        for name, stream in uploads:
            if stream.seek(0, 2) == 0:
                raise HTTPException(400, f"{name}: empty file")
        try:
            pixels = self.predictor.declared_pixels([stream for _, stream in uploads], [name for name, _ in uploads],
                                                    self.max_image_side)
        except ImageError as error:
            raise self.refusal(error) from None
        if pixels > self.max_request_pixels:
            raise HTTPException(413, f"the {len(uploads)} files declare {pixels:,} pixels in all; the limit is "
                                     f"{self.max_request_pixels:,} a request: send fewer or smaller images")
        return pixels

    @contextmanager
    def pixel_budget(self, pixels: int) -> Iterator[None]:
        """Hold ``pixels`` of the shared budget while the request waits and works; 503 when it is spent."""
        with self._budget:
            if self.inflight_pixels + pixels > self.max_inflight_pixels:
                raise HTTPException(503, f"server busy: {self.inflight_pixels:,} pixels of images in progress and this "
                                         f"request declares {pixels:,} (limit {self.max_inflight_pixels:,}); "
                                         "retry shortly", headers={"Retry-After": "1"})
            self.inflight_pixels += pixels
        try:
            yield
        finally:
            with self._budget:
                self.inflight_pixels -= pixels

    def predict(self, uploads: list[tuple[str, BinaryIO]]) -> Predictions:
        """Named files (read where they lie, memory or disk spool) → one prediction per sample, in
        order: per file, or for a layout model per group of its channels' files.

        Blocking, so call it off the event loop.
        """
        names = [name for name, _ in uploads]
        try:
            groups = self.predictor.samples(names)
        except PipelineError as error:
            raise HTTPException(422, self.public(str(error))) from None
        with self.pixel_budget(self.declared_pixels(uploads)), self._workers:
            inputs = np.stack([self.prepare([uploads[index] for index in group]) for group in groups])
            with self._lock:
                proba = self.predictor.predict_proba(inputs)
        classes = self.predictor.classes
        return Predictions(
            predictions=[
                Prediction(file=" ".join(names[index] for index in group), predicted=label,
                           probabilities={cls: float(p) for cls, p in zip(classes, row)})
                for group, label, row in zip(groups, self.predictor.predicted(proba), proba)
            ]
        )


# --- admission: request size, bytes in flight, pending requests, slow bodies ------------------

CLOSE = {"Connection": "close"}  # the body may be unread: the connection cannot carry another request


def mebibytes(size: int) -> str:
    return f"{size / 2**20:g} MiB" if size >= 2**20 else f"{size} bytes"


class RequestGuard:
    """Admit a request with a body only while the server has room, and stream its body under limits.

    Refused before the app sees it: a declared Content-Length over ``max_request_bytes`` (413),
    or a request that would make more than ``max_pending`` in progress or, by its declared
    length, more than ``max_inflight_bytes`` of bodies in progress (503, ``Retry-After``).
    While the app reads the body, chunked uploads included, bytes are counted as ``receive()``
    delivers them (413 past the limit, 503 past the shared budget) and the whole body must
    arrive within ``body_timeout`` seconds (408). Each refusal closes the connection. A request
    holds its place and its bytes until its response is sent. Requests without a body (GET)
    pass straight through, so ``/health`` answers while the server is full.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_request_bytes: int,
        max_pending: int = MAX_PENDING,
        max_inflight_bytes: int = MAX_INFLIGHT_BYTES,
        body_timeout: float = BODY_TIMEOUT,
    ) -> None:
        self.app = app
        self.max_request_bytes = max_request_bytes
        self.max_pending = max_pending
        self.max_inflight_bytes = max_inflight_bytes
        self.body_timeout = body_timeout
        self.pending = 0  # the event loop is single-threaded: plain counters suffice
        self.inflight_bytes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = content_length(scope)
        if declared is not None and declared > self.max_request_bytes:
            await self.answer(scope, receive, send, 413, self.too_large(f"{declared} bytes"))
            return
        refusal = self.busy(declared or 0)
        if refusal:
            await self.answer(scope, receive, send, 503, refusal, {"Retry-After": "1"})
            return
        body = GuardedBody(self, receive, reserved=declared or 0)
        self.pending += 1
        self.inflight_bytes += body.held
        try:
            await self.app(scope, body.receive, send)
        finally:
            self.pending -= 1
            self.inflight_bytes -= body.held

    def busy(self, extra_bytes: int, pending: int = 0) -> str | None:
        """Why one more request (or ``extra_bytes`` more of a body) does not fit now; None if it does."""
        if self.pending + pending >= self.max_pending:
            return f"server busy: {self.pending} requests in progress (limit {self.max_pending}); retry shortly"
        if self.inflight_bytes + extra_bytes > self.max_inflight_bytes:
            return (
                f"server busy: {mebibytes(self.inflight_bytes)} of uploads in progress and this request needs "
                f"{mebibytes(extra_bytes)} more (limit {mebibytes(self.max_inflight_bytes)}); retry shortly"
            )
        return None

    def too_large(self, size: str) -> str:
        limit = mebibytes(self.max_request_bytes)
        return f"request body is {size}; the limit is {limit}: send fewer or smaller files per request"

    @staticmethod
    async def answer(
        scope: Scope, receive: Receive, send: Send, status: int, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        await JSONResponse({"detail": detail}, status_code=status, headers={**CLOSE, **(headers or {})})(
            scope, receive, send
        )


class GuardedBody:
    """One request's ``receive``: counts its bytes against its limit and the shared budget, within a deadline."""

    def __init__(self, guard: RequestGuard, receive: Receive, reserved: int) -> None:
        self.guard = guard
        self._receive = receive
        self.held = reserved  # bytes counted in guard.inflight_bytes for this request
        self.received = 0
        self.complete = False
        self.deadline = asyncio.get_running_loop().time() + guard.body_timeout

    async def receive(self) -> Message:
        if self.complete:  # later messages (http.disconnect) are not body bytes, and not timed
            return await self._receive()
        try:
            async with asyncio.timeout_at(self.deadline):
                message = await self._receive()
        except TimeoutError:
            detail = f"request body not received within {self.guard.body_timeout:g} s ({self.received} bytes came)"
            raise HTTPException(408, detail, headers=CLOSE) from None
        if message["type"] != "http.request":
            return message
        self.received += len(message.get("body", b""))
        self.complete = not message.get("more_body", False)
        if self.received > self.guard.max_request_bytes:
            raise HTTPException(413, self.guard.too_large(f"over {self.guard.max_request_bytes} bytes"), headers=CLOSE)
        if self.received > self.held:  # a chunked body (or one longer than declared) grows its share
            extra = self.received - self.held
            refusal = self.guard.busy(extra, pending=-1)  # this request is already counted
            if refusal:
                raise HTTPException(503, refusal, headers={**CLOSE, "Retry-After": "1"})
            self.held += extra
            self.guard.inflight_bytes += extra
        return message


def content_length(scope: Scope) -> int | None:
    """The declared body size, if any (a malformed one is left to the server to reject)."""
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# --- the app ---------------------------------------------------------------------------------


NO_FILES = "no files: send one or more TIFFs as multipart form field 'files'"


async def validation_error(request: Request, error: Exception) -> JSONResponse:
    """FastAPI's 422 with one readable ``detail`` line, like every other error here."""
    assert isinstance(error, RequestValidationError)
    if any(tuple(problem["loc"]) == ("body", "files") and problem["type"] == "missing" for problem in error.errors()):
        return JSONResponse({"detail": NO_FILES}, status_code=422)
    problems = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}" for problem in error.errors()
    )
    return JSONResponse({"detail": f"invalid request: {problems}"}, status_code=422)


def create_app(
    model_folder: Path,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    max_image_side: int = MAX_IMAGE_SIDE,
    *,
    max_pending: int = MAX_PENDING,
    max_inflight_bytes: int = MAX_INFLIGHT_BYTES,
    workers: int = WORKERS,
    body_timeout: float = BODY_TIMEOUT,
    max_request_pixels: int = MAX_REQUEST_PIXELS,
    max_inflight_pixels: int = MAX_INFLIGHT_PIXELS,
) -> FastAPI:
    """The service for one model folder, loaded now: a bad folder fails here, before any request."""
    service = ModelService(Predictor(Path(model_folder)), max_image_side, workers, max_request_pixels,
                           max_inflight_pixels)
    description = describe_model(service.predictor)
    app = FastAPI(title="BPS nucleus classifier", description=__doc__.split("\n\n")[0])
    app.state.service = service
    app.add_middleware(
        RequestGuard,
        max_request_bytes=max_request_bytes,
        max_pending=max_pending,
        max_inflight_bytes=max(max_inflight_bytes, max_request_bytes),  # one maximum-size request always fits
        body_timeout=body_timeout,
    )
    app.add_exception_handler(RequestValidationError, validation_error)

    @app.get("/health")
    def health() -> dict[str, str]:
        """Liveness: the model is loaded and the server answers."""
        return {"status": "ok"}

    @app.get("/model")
    def model() -> dict[str, Any]:
        """The model's target, classes, architecture, training and preprocessing settings, and metrics."""
        return description

    @app.post(
        "/predict",
        responses={status: {"model": ErrorDetail, "description": text} for status, text in PREDICT_ERRORS.items()},
    )
    def predict(
        files: Annotated[list[UploadFile], File(description="one or more single-page TIFF crops", min_length=1)],
    ) -> Predictions:
        """Class probabilities per uploaded TIFF. A sync endpoint: FastAPI runs it in a worker thread."""
        named = [(upload.filename or f"file {index + 1}", upload.file) for index, upload in enumerate(files)]
        return service.predict(named)

    return app
