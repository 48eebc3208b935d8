"""HTTP prediction service: the ``stages.predict`` results for uploaded TIFFs, over HTTP.

    python -m stages.serve models/lenet --host 127.0.0.1 --port 8000
    curl -F files=@a.tif -F files=@b.tif http://127.0.0.1:8000/predict

* ``GET /health`` → ``{"status": "ok"}`` once the model is loaded.
* ``GET /model`` → what the model predicts and how it was built (from its ``model.json``).
* ``POST /predict`` (multipart, one or more ``files``) → ``{"predictions": [{"file", "predicted",
  "probabilities": {class: p}}]}``, in upload order, with the CLI's preprocessing and numbers.

Every client error is a 4xx with ``{"detail": message}`` naming the file and the problem; the
whole request fails on the first bad file, as the CLI does:

* 400: an empty file; 413: a request body over ``max_request_bytes`` (refused before any
  multipart parsing) or an image side over ``max_image_side``; 415: not a TIFF, or pixels that
  are not integers; 422: no files, not one 2-D single-channel page, or undecodable pixel data.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bps.images import (
    CompressionError,
    ImageError,
    ImageShapeError,
    ImageTooLargeError,
    NotATiffError,
    PixelTypeError,
)
from bps.predict import Predictor

MAX_REQUEST_BYTES = 32 * 2**20  # a nucleus crop is ~10-60 kB: hundreds of crops per request
MAX_IMAGE_SIDE = 1024  # crops are ~90-260 px a side; a whole field of view is a mistake

# model.json keys that describe the model; every other key is a recorded metric (epoch, val_accuracy...).
CONFIG_KEYS = frozenset({"architecture", "in_channels", "size", "target", "classes", "preprocess", "train", "baseline"})


class Prediction(BaseModel):
    file: str
    predicted: str
    probabilities: dict[str, float]


class Predictions(BaseModel):
    predictions: list[Prediction]


# --- the model -------------------------------------------------------------------------------


def describe_model(predictor: Predictor) -> dict[str, Any]:
    """``model.json`` grouped for clients: what it predicts, how it was built, how well it did."""
    info = predictor.info
    return {
        "name": predictor.folder.name,
        "target": info.get("target"),
        "classes": predictor.classes,
        "architecture": predictor.architecture,
        "input": {"channels": info.get("in_channels", 1), "size": predictor.preprocess.size},
        "preprocess": predictor.preprocess.model_dump(mode="json"),
        "training": info.get("baseline" if predictor.architecture == "mlp" else "train", {}),
        "metrics": {key: value for key, value in info.items() if key not in CONFIG_KEYS},
    }


# --- one upload to one model input -----------------------------------------------------------


# The HTTP status for each way an upload can be unusable (bps.images decides which it is).
IMAGE_ERROR_STATUS: dict[type[ImageError], int] = {
    NotATiffError: 415,
    PixelTypeError: 415,
    CompressionError: 415,
    ImageTooLargeError: 413,
    ImageShapeError: 422,
    ImageError: 422,
}


class ModelService:
    """The loaded model, its input limits, and a lock so concurrent requests run it one at a time.

    The lock keeps one batch at a time on the model (GPU memory, CPU threads); decoding and
    preprocessing, the slower part for small batches, still run in parallel.
    """

    def __init__(self, predictor: Predictor, max_image_side: int) -> None:
        self.predictor = predictor
        self.max_image_side = max_image_side
        self._lock = threading.Lock()

    def prepare(self, data: bytes, name: str) -> np.ndarray:
        """One uploaded file → the model's 1×size×size uint8 input, exactly as the CLI prepares it."""
        if not data:
            raise HTTPException(400, f"{name}: empty file")
        try:
            return self.predictor.prepare(io.BytesIO(data), name, self.max_image_side)
        except ImageError as error:
            raise HTTPException(IMAGE_ERROR_STATUS[type(error)], str(error)) from None

    def predict(self, uploads: list[tuple[str, bytes]]) -> Predictions:
        """Named file contents → one prediction each, in order; blocking, so call it off the event loop."""
        inputs = np.stack([self.prepare(data, name) for name, data in uploads])
        with self._lock:
            proba = self.predictor.predict_proba(inputs)
        classes = self.predictor.classes
        return Predictions(
            predictions=[
                Prediction(
                    file=name,
                    predicted=classes[int(row.argmax())],
                    probabilities={cls: float(p) for cls, p in zip(classes, row)},
                )
                for (name, _), row in zip(uploads, proba)
            ]
        )


# --- request size ----------------------------------------------------------------------------


class BodyLimit:
    """Refuse a request body over ``max_bytes`` with 413 before the app, or its multipart parser, sees it.

    A declared Content-Length over the limit is refused unread. Otherwise, chunked uploads
    included, bytes are counted as ``receive()`` delivers them and the app gets the body only once
    it is complete and within the limit: at most ``max_bytes`` held per request in flight.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self.refuse(scope, receive, send, f"{declared} bytes")
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: nobody to answer
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self.refuse(scope, receive, send, f"over {self.max_bytes} bytes")
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, replay(b"".join(chunks), receive), send)

    async def refuse(self, scope: Scope, receive: Receive, send: Send, size: str) -> None:
        limit = f"{self.max_bytes / 2**20:g} MiB" if self.max_bytes >= 2**20 else f"{self.max_bytes} bytes"
        detail = f"request body is {size}; the limit is {limit}: send fewer or smaller files per request"
        await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)


def content_length(scope: Scope) -> int | None:
    """The declared body size, if any (a malformed one is left to the server to reject)."""
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def replay(body: bytes, receive: Receive) -> Callable[[], Awaitable[Message]]:
    """A ``receive`` that first delivers the whole buffered body, then the client's later messages."""
    delivered = False

    async def receive_again() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()  # e.g. http.disconnect
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive_again


# --- the app ---------------------------------------------------------------------------------


async def validation_error(request: Request, error: Exception) -> JSONResponse:
    """FastAPI's 422 with one readable ``detail`` line, like every other error here."""
    assert isinstance(error, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}" for problem in error.errors()
    )
    return JSONResponse({"detail": f"invalid request: {problems}"}, status_code=422)


def create_app(
    model_folder: Path, max_request_bytes: int = MAX_REQUEST_BYTES, max_image_side: int = MAX_IMAGE_SIDE
) -> FastAPI:
    """The service for one model folder, loaded now: a bad folder fails here, before any request."""
    service = ModelService(Predictor(Path(model_folder)), max_image_side)
    description = describe_model(service.predictor)
    app = FastAPI(title="BPS nucleus classifier", description=__doc__.split("\n\n")[0])
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=max_request_bytes)
    app.add_exception_handler(RequestValidationError, validation_error)

    @app.get("/health")
    def health() -> dict[str, str]:
        """Liveness: the model is loaded and the server answers."""
        return {"status": "ok"}

    @app.get("/model")
    def model() -> dict[str, Any]:
        """The model's target, classes, architecture, training and preprocessing settings, and metrics."""
        return description

    @app.post("/predict")
    def predict(
        files: Annotated[list[UploadFile] | None, File(description="one or more single-page TIFF crops")] = None,
    ) -> Predictions:
        """Class probabilities per uploaded TIFF. A sync endpoint: FastAPI runs it in a worker thread."""
        if not files:
            raise HTTPException(422, "no files: send one or more TIFFs as multipart form field 'files'")
        uploads = [(upload.filename or f"file {index + 1}", upload.file.read()) for index, upload in enumerate(files)]
        return service.predict(uploads)

    return app
