"""The service under load and attack: a real `python -m bps serve` process, real sockets, its RSS from psutil.

Memory and connections must stay bounded: maximum-size uploads in parallel, decompression
bombs, more requests than the server admits, and bodies that never finish.
"""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import tifffile

from bps.serving.app import MAX_INFLIGHT_BYTES, MAX_REQUEST_BYTES
from bps.sim.render import DEFLATE
from tests.support.service import lenet_folder
from tests.support.tiff_bombs import deflate_bomb, jpeg_bomb, png_bomb

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
MIB = 2**20


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serving(model: Path, *options: str) -> Iterator[tuple[str, psutil.Process]]:
    """`python -m bps serve` on a free loopback port; yields its URL and process once /health answers."""
    port = free_port()
    command = [sys.executable, "-m", "bps", "serve", str(model), "--port", str(port), *options]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, "server exited"
            assert time.monotonic() < deadline, "server did not start"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield url, psutil.Process(process.pid)
    finally:
        process.terminate()
        process.wait(30)


@contextmanager
def peak_rss(process: psutil.Process) -> Iterator[dict[str, int]]:
    """Sample the process's RSS every 5 ms while the block runs; yields {'before', 'peak'} in MiB (filled at exit)."""
    result = {"before": process.memory_info().rss // MIB, "peak": 0}
    done = threading.Event()

    def sample() -> None:
        peak = 0
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.005)
        result["peak"] = peak // MIB

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield result
    finally:
        done.set()
        sampler.join()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return lenet_folder(tmp_path_factory.mktemp("models") / "lenet")


@pytest.fixture(scope="module")
def server(model) -> Iterator[tuple[str, psutil.Process]]:
    """The server with its default limits (32 MiB a request, 128 MiB in flight, 16 pending, 2 workers)."""
    with serving(model) as running:
        yield running


def post(url: str, files: list[tuple[str, bytes]]) -> httpx.Response:
    return httpx.post(f"{url}/predict", files=[("files", item) for item in files], timeout=120)


def test_sixteen_parallel_maximum_size_uploads_keep_rss_bounded(server):
    url, process = server
    body = bytes(MAX_REQUEST_BYTES - MIB)  # one file a little under the request limit (multipart adds headers)
    post(url, [("warm.tif", b"warm-up")])
    with peak_rss(process) as rss, ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda i: post(url, [(f"big{i}.tif", body)]), range(16)))
    statuses = sorted(response.status_code for response in responses)
    print(f"16 x {len(body) / MIB:.0f} MiB: statuses {statuses}, RSS {rss['before']} -> peak {rss['peak']} MiB")
    assert set(statuses) <= {415, 503}, statuses  # zeros are not a TIFF; or the server is full
    assert 415 in statuses and 503 in statuses
    busy = next(response for response in responses if response.status_code == 503)
    assert busy.json()["detail"].startswith("server busy: ")
    assert busy.headers["retry-after"] == "1"
    # Bodies in flight are capped at 128 MiB and spooled to disk past 1 MiB a file; 16 held in memory would be 496 MiB.
    assert rss["peak"] - rss["before"] < MAX_INFLIGHT_BYTES // MIB, rss
    assert httpx.get(f"{url}/health").status_code == 200


def test_bombs_get_415_or_422_with_bounded_rss(server):
    url, process = server
    bombs = [("png.tif", png_bomb(), 415), ("jpeg.tif", jpeg_bomb(), 415), ("deflate.tif", deflate_bomb(), 422)]
    with peak_rss(process) as rss, ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda i: post(url, [bombs[i % 3][:2]]), range(12)))
    print(f"12 bombs: RSS {rss['before']} -> peak {rss['peak']} MiB")
    for index, response in enumerate(responses):
        name, _, status = bombs[index % 3]
        assert response.status_code == status, response.text
        assert response.json()["detail"].startswith(f"{name}: ")
    assert rss["peak"] - rss["before"] < 64, rss  # one PNG bomb alone decodes to 244 MiB


def open_and_send(url: str, sent: bytes) -> socket.socket:
    """A raw connection to the server that has sent ``sent`` and waits."""
    connection = socket.create_connection((httpx.URL(url).host, httpx.URL(url).port), timeout=30)
    connection.sendall(sent)
    return connection


def open_partial_body(url: str, sent: bytes = b"--x\r\n") -> socket.socket:
    """A connection that declares a 1000-byte multipart body and sends only its first bytes."""
    head = (
        "POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=x\r\n"
        "Content-Length: 1000\r\n\r\n"
    )
    return open_and_send(url, head.encode() + sent)


def read_until_closed(connection: socket.socket) -> bytes:
    answer = b""
    while chunk := connection.recv(4096):
        answer += chunk
    return answer


def test_excess_concurrency_gets_503_and_health_still_answers(model):
    with serving(model, "--max-pending", "2", "--body-timeout", "60") as (url, _):
        held = [open_partial_body(url) for _ in range(2)]
        try:
            time.sleep(0.5)  # both admitted, waiting for their bodies
            response = httpx.post(f"{url}/predict", files=[("files", ("a.tif", b"x"))], timeout=30)
            assert response.status_code == 503
            assert response.json()["detail"] == "server busy: 2 requests in progress (limit 2); retry shortly"
            assert httpx.get(f"{url}/health").status_code == 200
        finally:
            for connection in held:
                connection.close()
        time.sleep(0.5)  # the held requests end with their connections: room again
        assert httpx.post(f"{url}/predict", files=[("files", ("a.tif", b"x"))], timeout=30).status_code == 415


def test_slow_bodies_get_408_and_their_connections_are_closed(model):
    with serving(model, "--body-timeout", "1") as (url, process):
        started = time.monotonic()
        connections = [open_partial_body(url) for _ in range(12)]
        answers = [read_until_closed(connection) for connection in connections]  # returns once the server closes
        elapsed = time.monotonic() - started
        for connection in connections:
            connection.close()
        for answer in answers:
            assert answer.startswith(b"HTTP/1.1 408"), answer
            assert b"request body not received within 1 s" in answer
        assert elapsed < 15, elapsed
        assert len([c for c in process.net_connections() if c.status == psutil.CONN_ESTABLISHED]) == 0
        assert httpx.get(f"{url}/health").status_code == 200


def test_connections_stuck_in_their_headers_are_closed(model):
    with serving(model, "--header-timeout", "2") as (url, process):
        started = time.monotonic()
        stalled = [open_and_send(url, b"POST /predict HTTP/1.1\r\nHost: x\r\n") for _ in range(12)]  # slowloris
        # a kept-alive connection: one whole request, then the next one's headers stall
        stalled.append(open_and_send(url, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\n"))
        slow_but_whole = open_and_send(url, b"GET /health HTTP/1.1\r\n")
        time.sleep(0.3)  # well inside the clock
        slow_but_whole.sendall(b"Host: x\r\nConnection: close\r\n\r\n")
        assert read_until_closed(slow_but_whole).startswith(b"HTTP/1.1 200")

        answers = [read_until_closed(connection) for connection in stalled]  # returns once the server closes
        elapsed = time.monotonic() - started
        for connection in [*stalled, slow_but_whole]:
            connection.close()
        assert answers[:12] == [b""] * 12  # closed without an answer: there was no request to answer
        assert answers[12].startswith(b"HTTP/1.1 200") and answers[12].count(b"HTTP/1.1 ") == 1
        assert elapsed < 15, elapsed
        assert len([c for c in process.net_connections() if c.status == psutil.CONN_ESTABLISHED]) == 0
        assert httpx.get(f"{url}/health").status_code == 200


def deflate_tiff(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, image, compression=DEFLATE)
    return buffer.getvalue()


def test_a_pixel_amplification_attack_does_not_starve_other_clients(server):
    """Eight clients loop on 300 Deflate TIFFs of 2.5 kB that each declare 1024×1024 (0.75 MB a
    request, ~10 s of one core to decode); a ninth, with one ordinary crop, is served throughout."""
    url, _ = server
    megapixel = deflate_tiff(np.zeros((1024, 1024), np.uint16))
    attack = [(f"m{index}.tif", megapixel) for index in range(300)]
    crop = [("crop.tif", deflate_tiff(np.random.default_rng(0).integers(200, 3000, (120, 90), dtype=np.uint16)))]
    stop, statuses = threading.Event(), []

    def attacker() -> None:
        for _ in range(50):  # bounded, even if the server were to answer at once forever
            if stop.is_set():
                return
            try:
                statuses.append(httpx.post(f"{url}/predict", files=[("files", item) for item in attack],
                                           timeout=20).status_code)
            except httpx.TimeoutException:
                statuses.append("timeout")

    latencies = []
    with ThreadPoolExecutor(8) as pool:
        attackers = [pool.submit(attacker) for _ in range(8)]
        try:
            time.sleep(1)  # the attack is under way
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                started = time.monotonic()
                response = httpx.post(f"{url}/predict", files=[("files", item) for item in crop], timeout=10)
                latencies.append(time.monotonic() - started)
                assert response.status_code == 200, response.text
        finally:
            stop.set()
            for future in attackers:
                future.result()
    print(f"attack: {len(statuses)} requests {sorted(set(map(str, statuses)))}; ordinary client: {len(latencies)} "
          f"requests, slowest {max(latencies):.2f} s")
    assert set(statuses) == {413}, statuses
    assert len(latencies) >= 3 and max(latencies) < 5, latencies
