"""The service under test: a model folder, uploads, and an app served on a free loopback port."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import tifffile
import torch
import uvicorn
from fastapi import FastAPI

from bps.models.networks import build_model, save_checkpoint
from tests.support.model_cards import finished_card

REPO = Path(__file__).resolve().parents[2]
CLASSES = ["Fe", "X-ray"]
MAX_BYTES = 2**20  # small enough to exceed cheaply, large enough for the three crops below
# Real file names (Fe 0.82 Gy, X-ray 1 Gy, Fe sham; 4 h), so simulate_image draws real-looking crops.
CROPS = [
    ("P242_73665006707-A6_001_003_proj.tif", "Fe", 0.82, 4),
    ("P280_73668439105-D5_012_001_proj.tif", "X-ray", 1.0, 4),
    ("P244_73665165741-C7_020_002_proj.tif", "Fe", 0.0, 4),
]


def tiff_bytes(image: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, image, **options)
    return buffer.getvalue()


@contextmanager
def running(app: FastAPI) -> Iterator[str]:
    """The app on a real uvicorn server in a thread, on a port the OS picks; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def lenet_folder(folder: Path, in_channels: int = 1, **fields) -> Path:
    """A LeNet-5 checkpoint shaped like stages/train_lenet.py's, with seeded random weights."""
    torch.manual_seed(0)
    config = finished_card(
        "lenet", in_channels, 32, CLASSES, training={"lr": 0.001, "epochs": 3},
        metrics={"epoch": 2, "val_accuracy": 0.75}, **fields,
    )
    save_checkpoint(folder, build_model(config), config)
    return folder


def post(url: str, files: list[tuple[str, bytes]], timeout: float = 30) -> httpx.Response:
    return httpx.post(f"{url}/predict", files=[("files", (name, data)) for name, data in files], timeout=timeout)
