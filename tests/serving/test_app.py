"""bps.serving.app and `python -m bps serve`: a real uvicorn server on 127.0.0.1, a real HTTP client (httpx)."""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tifffile
import uvicorn
from fastapi import FastAPI
from PIL import Image
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bps.core import options
from bps.core.errors import PipelineError
from bps.core.params import BaselineParams, PreprocessParams
from bps.models import pixel_mlp, sklearn_io
from bps.serving import commands as serve
from bps.serving.app import MAX_IMAGE_SIDE, create_app
from bps.serving.predictor import Predictor
from bps.sim.render import DEFLATE, simulate_image
from tests.support.model_cards import finished_card
from tests.support.service import CLASSES, CROPS, MAX_BYTES, REPO, lenet_folder, post, running, tiff_bytes
from tests.support.tiff_bombs import header_only_png


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    return lenet_folder(tmp_path_factory.mktemp("models") / "lenet")


@pytest.fixture(scope="module")
def tiffs(tmp_path_factory) -> list[Path]:
    """Three simulated nucleus crops, written as the bucket's Deflate TIFFs."""
    folder = tmp_path_factory.mktemp("images")
    for name, particle, dose, hours in CROPS:
        tifffile.imwrite(folder / name, simulate_image(name, particle, dose, hours, seed=0), compression=DEFLATE)
    return [folder / name for name, *_ in CROPS]


@pytest.fixture(scope="module", autouse=True)
def predict_cli(model_folder, tiffs, tmp_path_factory) -> Iterator[tuple[subprocess.Popen, Path]]:
    """`python -m bps predict` on the crops, started before every other test: its imports take seconds."""
    out = tmp_path_factory.mktemp("cli") / "predictions.json"
    command = [sys.executable, "-m", "bps", "predict", str(model_folder), *map(str, tiffs), "--out", str(out)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield process, out
    if process.poll() is None:
        process.kill()
    process.communicate()


@pytest.fixture(scope="module")
def app(model_folder) -> FastAPI:
    return create_app(model_folder, max_request_bytes=MAX_BYTES)


@pytest.fixture(scope="module")
def url(app) -> Iterator[str]:
    with running(app) as base:
        yield base


def uploads(paths: list[Path]) -> list[tuple[str, bytes]]:
    return [(path.name, path.read_bytes()) for path in paths]


def probabilities(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array([[p["probabilities"][cls] for cls in CLASSES] for p in response.json()["predictions"]])


def assert_still_serving(url: str) -> None:
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}


# --- health and model ------------------------------------------------------------------------


def test_health(url):
    response = httpx.get(f"{url}/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_model_describes_the_checkpoint(url):
    response = httpx.get(f"{url}/model")
    assert response.status_code == 200
    assert response.json() == {
        "name": "lenet",
        "kind": "cnn",
        "target": "particle",
        "classes": CLASSES,
        "architecture": "lenet",
        "input": {"channels": 1, "size": 32},
        "preprocess": PreprocessParams(image_size=32).model_dump(mode="json"),
        "training": {"lr": 0.001, "epochs": 3},
        "metrics": {"epoch": 2, "val_accuracy": 0.75},
    }


# --- predictions -----------------------------------------------------------------------------


def test_baseline_model_is_served(tmp_path, tiffs):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (40, 1, 32, 32), dtype=np.uint8), rng.integers(0, 2, 40)
    params = BaselineParams(hidden_layers=[8], lr=1e-2, batch_size=16)
    features = pixel_mlp.flatten(images)
    scaler = StandardScaler().fit(features)
    mlp = pixel_mlp.make_mlp(params)
    pixel_mlp.fit_epoch(mlp, scaler.transform(features), labels, np.arange(2))
    info = finished_card("mlp", 1, 32, CLASSES, training=params.model_dump(mode="json"), metrics={})
    sklearn_io.save(tmp_path, make_pipeline(scaler, mlp), info)

    with running(create_app(tmp_path)) as base:
        described = httpx.get(f"{base}/model").json()
        served = probabilities(post(base, uploads(tiffs)))
    assert described["architecture"] == "mlp"
    assert described["training"] == params.model_dump(mode="json")
    assert described["metrics"] == {}
    expected = Predictor(tmp_path).predict_files(tiffs)[[f"p_{cls}" for cls in CLASSES]].to_numpy()
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-6)


def test_concurrent_requests_match_sequential(url, tiffs):
    files = uploads(tiffs)
    sequential = probabilities(post(url, files))
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda _: post(url, files), range(16)))
    for response in responses:
        np.testing.assert_allclose(probabilities(response), sequential, rtol=0, atol=1e-6)


def test_inference_runs_off_the_event_loop(app, url, tiffs, monkeypatch):
    predictor = app.state.service.predictor
    original, entered, release = predictor.predict_proba, threading.Event(), threading.Event()

    def blocked(images: np.ndarray) -> np.ndarray:
        entered.set()
        release.wait(10)
        return original(images)

    monkeypatch.setattr(predictor, "predict_proba", blocked)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(post, url, uploads(tiffs))
        try:
            assert entered.wait(10)
            # The event loop still answers while a prediction is in progress.
            assert httpx.get(f"{url}/health", timeout=2).json() == {"status": "ok"}
        finally:
            release.set()
        assert pending.result().status_code == 200


def test_model_runs_one_batch_at_a_time(app, url, tiffs, monkeypatch):
    predictor = app.state.service.predictor
    original, guard = predictor.predict_proba, threading.Lock()
    state = {"active": 0, "peak": 0, "calls": 0}

    def counted(images: np.ndarray) -> np.ndarray:
        with guard:
            state["active"] += 1
            state["calls"] += 1
            state["peak"] = max(state["peak"], state["active"])
        time.sleep(0.05)  # long enough for parallel requests to overlap here if nothing serialises them
        with guard:
            state["active"] -= 1
        return original(images)

    monkeypatch.setattr(predictor, "predict_proba", counted)
    files = uploads(tiffs[:1])
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: post(url, files), range(8)))
    assert [response.status_code for response in responses] == [200] * 8
    assert state["calls"] == 8
    assert state["peak"] == 1


# --- bad input -------------------------------------------------------------------------------


def corrupt_pixels() -> bytes:
    """A valid header and IFD, but Deflate data that does not inflate."""
    data = bytearray(tiff_bytes((np.arange(80 * 80).reshape(80, 80) % 3000).astype(np.uint16), compression=DEFLATE))
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tiff:
        start, count = tiff.pages.first.dataoffsets[0], tiff.pages.first.databytecounts[0]
    data[start : start + count] = b"\xff" * count
    return bytes(data)


def pages(count: int) -> bytes:
    return tiff_bytes(np.zeros((count, 40, 40), np.uint16), photometric="minisblack")


BAD_UPLOADS = {
    "not a TIFF": ("notes.txt", b"these are not pixels", 415, "not a TIFF"),
    "PNG": ("crop.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64, 415, "not a TIFF"),
    "empty": ("empty.tif", b"", 400, "empty file"),
    "RGB": ("rgb.tif", tiff_bytes(np.zeros((40, 40, 3), np.uint8), photometric="rgb"), 422, "single-channel"),
    "stack": ("stack.tif", pages(3), 422, "found 3 pages"),
    "one row": ("row.tif", tiff_bytes(np.zeros((1, 50), np.uint16)), 422, "2-D"),
    "float": ("float.tif", tiff_bytes(np.full((40, 40), 0.5, np.float32)), 415, "float32"),
    "complex": ("complex.tif", tiff_bytes(np.zeros((40, 40), np.complex64)), 415, "complex64"),
    "bilevel": ("mask.tif", tiff_bytes(np.zeros((40, 40), bool)), 415, "bool"),
    "huge": (
        "field.tif",
        tiff_bytes(np.zeros((40, MAX_IMAGE_SIDE + 1), np.uint16), compression=DEFLATE),
        413,
        f"at most {MAX_IMAGE_SIDE} px",
    ),
    "corrupt": ("broken.tif", corrupt_pixels(), 422, "cannot decode"),
}


@pytest.mark.parametrize("case", BAD_UPLOADS, ids=list(BAD_UPLOADS))
def test_bad_upload_is_refused_with_its_name(url, case):
    name, data, status, words = BAD_UPLOADS[case]
    response = post(url, [(name, data)])
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert detail.startswith(f"{name}: ")
    assert words in detail
    assert_still_serving(url)


LAYOUT_CHANNELS = ["dna", "actin"]


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 40), 9, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


GOOD_PNG = png_bytes(np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8))


@pytest.fixture(scope="module")
def layout_url(tmp_path_factory) -> Iterator[str]:
    """A two-channel layout model (8-bit PNG channel files) on a real server."""
    folder = lenet_folder(tmp_path_factory.mktemp("models") / "layout", 2, target=options.LAYOUT_TARGET,
                          channels=LAYOUT_CHANNELS, bit_depth=8)
    with running(create_app(folder, max_request_bytes=MAX_BYTES)) as base:
        yield base


BAD_CHANNEL_FILES = {
    "PNG bomb": ("bomb.png", header_only_png(20000, 20000), 413, "20000×20000 px"),
    "PNG cut short": ("cut.png", GOOD_PNG[:-20], 422, "cannot read the PNG"),
    "JPEG as .png": ("photo.png", jpeg_bytes(), 415, "not a PNG file"),
    "another size": ("wide.png", png_bytes(np.zeros((512, 37), np.uint8)), 422,
                     "channels of one sample differ in size: dna.png (48×48), wide.png (512×37)"),
}


@pytest.mark.parametrize("case", BAD_CHANNEL_FILES, ids=list(BAD_CHANNEL_FILES))
def test_a_bad_channel_file_is_a_4xx_naming_it_never_a_500(layout_url, case):
    name, data, status, words = BAD_CHANNEL_FILES[case]
    assert post(layout_url, [("dna.png", GOOD_PNG), ("actin.png", GOOD_PNG)]).status_code == 200
    response = post(layout_url, [("dna.png", GOOD_PNG), (name, data)])
    assert response.status_code == status, response.text
    assert response.json()["detail"].startswith(f"{name}: ") and words in response.json()["detail"]
    assert_still_serving(layout_url)


def test_error_bodies_carry_no_server_paths_or_object_addresses(url, model_folder, layout_url, tiffs):
    """Every kind of refusal, to a BPS and a layout model: the client learns the problem, not the server's layout."""
    responses = [post(url, [(name, data)]) for name, data, *_ in BAD_UPLOADS.values()]
    responses += [post(layout_url, [("dna.png", GOOD_PNG), (name, data)])
                  for name, data, *_ in BAD_CHANNEL_FILES.values()]
    responses += [post(layout_url, [("dna.png", GOOD_PNG)]),  # not a whole sample: names the model
                  post(layout_url, [("dna.png", GOOD_PNG), ("actin.png", b"GIF89a not a png at all")]),
                  post(url, [("n" * 300 + ".tif", b"not a tiff")])]
    for response in responses:
        detail = response.json()["detail"]
        assert 400 <= response.status_code < 500 and "\n" not in detail, detail
        assert re.search(r"0x[0-9a-fA-F]{4,}", detail) is None, detail
        assert str(REPO) not in detail and "/tmp" not in detail and str(model_folder.parent) not in detail, detail
    assert "model layout takes 2 files per sample" in responses[-3].json()["detail"]


def test_bad_file_among_good_ones_fails_the_request_naming_it(url, tiffs):
    files = uploads(tiffs)
    files.insert(1, ("bad.tif", b"not a tiff"))
    response = post(url, files)
    assert response.status_code == 415
    assert response.json()["detail"].startswith("bad.tif: not a TIFF")
    assert_still_serving(url)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({}, "no files"),
        ({"data": {"comment": "forgot the files"}, "files": {"other": ("a.tif", b"x")}}, "no files"),
        ({"json": {"files": ["a.tif"]}}, "no files"),
        ({"data": {"files": "a.tif"}}, "invalid request: body.files"),  # a text field, not an upload
    ],
    ids=["no body", "other fields", "JSON", "text field"],
)
def test_request_without_files_is_refused(url, options, words):
    response = httpx.post(f"{url}/predict", **options)
    assert response.status_code == 422, response.text
    assert words in response.json()["detail"]
    assert_still_serving(url)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"content": b"garbage", "headers": {"content-type": "multipart/form-data"}}, "Missing boundary"),
        ({"files": [("files", (f"{i}.tif", b"x")) for i in range(1001)]}, "Too many files"),
    ],
    ids=["no boundary", "too many files"],
)
def test_malformed_multipart_is_refused(url, options, words):
    response = httpx.post(f"{url}/predict", **options)
    assert response.status_code == 400, response.text
    assert words in response.json()["detail"]
    assert_still_serving(url)


def oversized_tiff() -> bytes:
    """A valid crop-sized TIFF that is accepted except for its bytes: uncompressed, over MAX_BYTES."""
    data = tiff_bytes(np.random.default_rng(0).integers(0, 3000, (800, 800), dtype=np.uint16))
    assert len(data) > MAX_BYTES
    return data


def test_body_over_limit_is_refused(url):
    response = post(url, [("big.tif", oversized_tiff())])
    assert response.status_code == 413
    assert "limit is 1 MiB" in response.json()["detail"]
    assert_still_serving(url)


def chunked(request: httpx.Request, size: int = 64 * 1024) -> Iterator[bytes]:
    body = request.read()
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_chunked_body_is_counted(url, tiffs):
    small = httpx.Request("POST", f"{url}/predict", files=[("files", (p.name, p.read_bytes())) for p in tiffs])
    big = httpx.Request("POST", f"{url}/predict", files=[("files", ("big.tif", oversized_tiff()))])
    responses = []
    for request in (small, big):
        headers = {"content-type": request.headers["content-type"]}
        response = httpx.post(str(request.url), content=chunked(request), headers=headers)
        assert response.request.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in response.request.headers
        responses.append(response)
    np.testing.assert_allclose(probabilities(responses[0]), probabilities(post(url, uploads(tiffs))), atol=1e-6)
    assert responses[1].status_code == 413
    assert "over 1048576 bytes" in responses[1].json()["detail"]
    assert_still_serving(url)


def test_declared_length_over_limit_is_refused_unread(url):
    # Only headers are sent: a server waiting for the body would time out here instead of answering.
    host, port = httpx.URL(url).host, httpx.URL(url).port
    head = (
        "POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=x\r\n"
        "Content-Length: 1000000000\r\n\r\n"
    )
    answer = b""
    with socket.create_connection((host, port), timeout=5) as connection:
        connection.sendall(head.encode())
        while b"}" not in answer:
            chunk = connection.recv(4096)
            assert chunk, f"connection closed after {answer!r}"
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"1000000000 bytes" in answer
    assert_still_serving(url)


# --- loading the model -----------------------------------------------------------------------


def test_unusable_model_folders_fail_at_startup(tmp_path):
    with pytest.raises(PipelineError, match="not a model folder"):
        create_app(tmp_path / "missing")
    no_weights = lenet_folder(tmp_path / "no-weights")
    (no_weights / "model.pt").unlink()
    with pytest.raises(PipelineError, match="cannot load the model"):
        create_app(no_weights)
    with pytest.raises(PipelineError, match="takes 4 channels"):
        create_app(lenet_folder(tmp_path / "four-channels", in_channels=4))


@pytest.mark.parametrize("broken", [False, True], ids=["missing folder", "no weights"])
def test_serve_cli_bad_model_folder(tmp_path, capsys, broken):
    folder = tmp_path / "lenet"
    if broken:
        (lenet_folder(folder) / "model.pt").unlink()
    with pytest.raises(SystemExit) as stopped:
        serve.serve([str(folder), "--port", "1"])
    assert stopped.value.code == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {folder}: ")


def test_serve_cli_starts_uvicorn_with_the_model(model_folder, monkeypatch):
    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: started.update(app=app, **options))
    serve.serve([str(model_folder), "--host", "127.0.0.1", "--port", "8123", "--max-request-bytes", "1000"])
    assert (started["host"], started["port"]) == ("127.0.0.1", 8123)
    with running(started["app"]) as base:
        assert httpx.get(f"{base}/model").json()["name"] == "lenet"
        response = post(base, [("a.tif", b"x" * 2000)])
    assert response.status_code == 413  # the limit given on the command line


@pytest.mark.parametrize(
    "option",
    ["--max-request-bytes=0", "--max-image-side=-5", "--port=http", "--workers=0", "--max-pending=-1"]
    + ["--body-timeout=0", "--body-timeout=nan"],
)
def test_serve_cli_rejects_bad_options(model_folder, capsys, option):
    with pytest.raises(SystemExit) as stopped:
        serve.serve([str(model_folder), option])
    assert stopped.value.code == 2
    assert option.split("=")[0] in capsys.readouterr().err


# --- the predict CLI, last: it has been importing in the background (see predict_cli) --------


def test_predict_matches_predictor_and_cli(url, model_folder, tiffs, predict_cli):
    response = post(url, uploads(tiffs))
    served = probabilities(response)
    predictions = response.json()["predictions"]
    assert [p["file"] for p in predictions] == [path.name for path in tiffs]  # upload order, upload names
    assert [p["predicted"] for p in predictions] == [CLASSES[i] for i in served.argmax(axis=1)]
    np.testing.assert_allclose(served.sum(axis=1), 1.0, atol=1e-6)
    assert len({tuple(row) for row in served.round(6)}) == 3  # distinct crops: a mix-up would show

    table = Predictor(model_folder).predict_files(tiffs)
    in_process = table[[f"p_{cls}" for cls in CLASSES]].to_numpy()
    np.testing.assert_allclose(served, in_process, rtol=0, atol=1e-6)
    assert [p["predicted"] for p in predictions] == table["predicted"].tolist()

    process, out = predict_cli
    _, errors = process.communicate(timeout=120)
    assert process.returncode == 0, errors
    rows = json.loads(out.read_text())
    assert [Path(row["file"]).name for row in rows] == [path.name for path in tiffs]
    cli = np.array([[row[f"p_{cls}"] for cls in CLASSES] for row in rows])
    np.testing.assert_allclose(served, cli, rtol=0, atol=1e-6)
