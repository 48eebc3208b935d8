"""bps.data.s3 against a real S3 server (moto, on loopback), reached through a proxy that misbehaves on cue.

The proxy speaks real HTTP on both sides, so every fault below (throttling, dropped and cut
connections, short or altered bodies, a server that dies) reaches botocore as it would from AWS.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import boto3
import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from bps.core.files import PART_SUFFIX
from bps.core.params import DataParams, S3Params
from bps.data import s3
from bps.data.meta import MetaError
from bps.data.s3 import MANIFEST, DownloadError, download_dataset, download_objects, list_objects, make_client
from bps.sim.render import DEFLATE, plan_dataset, simulate_image
from tests.conftest import isolate_aws

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "Microscopy/train"
REGION = "us-west-2"

# --------------------------------------------------------------------------- fault-injecting proxy

# Headers that describe one hop, or that the proxy sets itself.
HOP_HEADERS = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "content-length",
    "expect",
    "te",
    "upgrade",
    "server",
    "date",
}
SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>proxy</RequestId></Error>"
)
# What FaultProxy.fault may answer for the n-th GET of a key.
FAULTS = {
    None: "forward the request and its answer unchanged",
    "503": "answer 503 SlowDown without asking the server",
    "drop": "close the connection without an answer",
    "cut": "promise the whole body, send half of it, then close the connection",
    "short": "a consistent answer one byte short (Content-Length matches the short body)",
    "corrupt": "the whole body with its first byte flipped",
}


def object_key(path: str) -> str | None:
    """The key of a path-style object request (``/bucket/key``); None for bucket requests."""
    parts = urlsplit(path).path.split("/", 2)
    return unquote(parts[2]) if len(parts) == 3 and parts[2] else None


class FaultProxy:
    """A threaded HTTP proxy on 127.0.0.1 in front of the S3 server.

    ``fault(key, n)`` is asked about the n-th GET (from 1) of each object key and returns one
    of :data:`FAULTS`. ``body_delay_s`` pauses half-way through each object body;
    ``kill_after`` kills the proxy (like a server dying) when that many image GETs arrived.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.fault: Callable[[str, int], str | None] = lambda key, n: None
        self.body_delay_s = 0.0
        self.kill_after: int | None = None
        self.gets: Counter[str] = Counter()
        self.authorization: list[str | None] = []
        self.dead = threading.Event()
        self._lock = threading.Lock()
        self._killed = False
        self._sockets: set[socket.socket] = set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def image_gets(self) -> Counter[str]:
        """GET requests per image file name."""
        with self._lock:
            return Counter({key.rsplit("/", 1)[-1]: n for key, n in self.gets.items() if key.endswith(".tif")})

    def count(self, key: str | None, authorization: str | None) -> int:
        """Record one request; return how many GETs of ``key`` there have been, this one included."""
        with self._lock:
            self.authorization.append(authorization)
            if key is None:
                return 0
            self.gets[key] += 1
            images = sum(n for name, n in self.gets.items() if name.endswith(".tif"))
            seen = self.gets[key]
        if self.kill_after is not None and images >= self.kill_after:
            self.dead.set()  # at once: this very request is cut short too
            threading.Thread(target=self.kill, daemon=True).start()
        return seen

    def track(self, sock: socket.socket, open_: bool) -> None:
        with self._lock:
            (self._sockets.add if open_ else self._sockets.discard)(sock)

    def forward(self, method: str, path: str, headers, body: bytes | None) -> tuple[int, list, bytes]:
        connection = http.client.HTTPConnection(*self.upstream, timeout=10)
        try:
            kept = {name: value for name, value in headers.items() if name.lower() not in HOP_HEADERS}
            connection.request(method, path, body=body, headers=kept)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def kill(self) -> None:
        """Stop answering: refuse new connections and cut the open ones, mid-body included."""
        with self._lock:
            if self._killed:
                return
            self._killed = True
        self.dead.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join()


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects

        def setup(self) -> None:
            super().setup()
            proxy.track(self.connection, True)

        def finish(self) -> None:
            proxy.track(self.connection, False)
            with contextlib.suppress(OSError):
                super().finish()

        def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's signature
            pass

        def do_GET(self) -> None:
            try:
                self.relay()
            except OSError:
                self.abort()

        do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

        def abort(self) -> None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

        def relay(self) -> None:
            if proxy.dead.is_set():
                return self.abort()
            length = int(self.headers.get("Content-Length") or 0)
            request_body = self.rfile.read(length) if length else None
            key = object_key(self.path) if self.command == "GET" else None
            seen = proxy.count(key, self.headers.get("Authorization"))
            fault = proxy.fault(key, seen) if key else None
            assert fault in FAULTS, fault
            if fault == "drop":
                return self.abort()
            if fault == "503":
                status, headers, body = 503, [("Content-Type", "application/xml")], SLOW_DOWN
            else:
                status, headers, body = proxy.forward(self.command, self.path, self.headers, request_body)
            if fault == "short":
                body = body[:-1]
            elif fault == "corrupt":
                body = bytes([body[0] ^ 0xFF]) + body[1:]
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in HOP_HEADERS:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command == "HEAD":
                return None
            half = len(body) // 2
            if fault == "cut":
                self.wfile.write(body[:half])
                return self.abort()
            if key and proxy.body_delay_s:
                self.wfile.write(body[:half])
                if proxy.dead.wait(proxy.body_delay_s):
                    return self.abort()
                body = body[half:]
            self.wfile.write(body)
            return None

    return Handler


# --------------------------------------------------------------------------- buckets in the NASA layout


@dataclass
class Dataset:
    meta: pd.DataFrame  # meta.csv as uploaded
    blobs: dict[str, bytes]  # file name -> object bytes


@dataclass
class Bucket:
    name: str
    endpoint: str
    uploader: object
    meta: pd.DataFrame
    blobs: dict[str, bytes]

    def key(self, name: str) -> str:
        return f"{PREFIX}/{name}"

    def put(self, name: str, data: bytes) -> None:
        self.uploader.put_object(Bucket=self.name, Key=self.key(name), Body=data, ACL="public-read")

    def put_meta(self, table: pd.DataFrame) -> None:
        self.put("meta.csv", table.to_csv(index=False).encode())

    def params(
        self,
        endpoint: str,
        *,
        hours: tuple[int, ...] = (4, 24, 48),
        max_per_condition: int | None = None,
        sample_seed: int = 0,
        **s3,
    ) -> DataParams:
        s3 = {"bucket": self.name, "endpoint_url": endpoint, "region": REGION, "retries": 2, "workers": 4, **s3}
        return DataParams(
            source="s3",
            hours=list(hours),
            max_per_condition=max_per_condition,
            sample_seed=sample_seed,
            s3=S3Params(**s3),
        )


def tiff_bytes(image: np.ndarray) -> bytes:
    stream = io.BytesIO()
    tifffile.imwrite(stream, image, compression=DEFLATE)
    return stream.getvalue()


def uploader_client(endpoint: str):
    """The bucket's owner. Objects get no additional checksum, like the real bucket's: only their
    size and ETag (their MD5) vouch for them, so the downloader's own checks are what is tested."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="owner",
        aws_secret_access_key="owner-secret",
        config=Config(request_checksum_calculation="when_required", response_checksum_validation="when_required"),
    )


@pytest.fixture(scope="module")
def nasa_dataset() -> Dataset:
    """34 real simulated TIFFs: 2 per condition, at 4, 24 and 48 h."""
    meta = plan_dataset(images_per_condition=2, hours=[4, 24, 48], seed=0)
    blobs = {
        row.filename: tiff_bytes(simulate_image(row.filename, row.particle_type, row.dose_Gy, row.hr_post_exposure, 0))
        for row in meta.itertuples(index=False)
    }
    return Dataset(meta, blobs)


@pytest.fixture(scope="module")
def many_small() -> Dataset:
    """204 small objects (random bytes: the downloader does not look inside)."""
    meta = plan_dataset(images_per_condition=12, hours=[4, 24, 48], seed=1)
    rng = np.random.default_rng(1)
    return Dataset(meta, {name: rng.bytes(int(rng.integers(1_000, 4_000))) for name in meta["filename"]})


def fill_bucket(endpoint: str, dataset: Dataset) -> Bucket:
    """Create a uniquely named bucket holding ``Microscopy/train/meta.csv`` and the images."""
    uploader = uploader_client(endpoint)
    name = f"bps-test-{uuid.uuid4().hex[:12]}"
    uploader.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    bucket = Bucket(name, endpoint, uploader, dataset.meta, dataset.blobs)
    bucket.put_meta(dataset.meta)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(bucket.put, dataset.blobs, dataset.blobs.values()))
    return bucket


@pytest.fixture
def make_bucket(moto_server, aws_env) -> Callable[[Dataset], Bucket]:
    return partial(fill_bucket, moto_server)


@pytest.fixture
def bucket(make_bucket, nasa_dataset) -> Bucket:
    """A bucket of this test's own, which it may change."""
    return make_bucket(nasa_dataset)


@pytest.fixture(scope="module")
def _unchanged_bucket(moto_server, nasa_dataset, tmp_path_factory) -> Bucket:
    with pytest.MonkeyPatch.context() as monkeypatch:
        isolate_aws(monkeypatch, tmp_path_factory.mktemp("aws"))
        return fill_bucket(moto_server, nasa_dataset)


@pytest.fixture
def shared_bucket(_unchanged_bucket, aws_env) -> Bucket:
    """One bucket for the tests that only read it (filling one takes a while): never change it."""
    return _unchanged_bucket


@pytest.fixture
def make_proxy(moto_server) -> Iterator[Callable[[], FaultProxy]]:
    proxies: list[FaultProxy] = []

    def make() -> FaultProxy:
        proxies.append(FaultProxy(moto_server))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.kill()


@pytest.fixture
def proxy(make_proxy) -> FaultProxy:
    return make_proxy()


# --------------------------------------------------------------------------- helpers


def assert_folder_sound(folder: Path, blobs: dict[str, bytes], allowed_parts: tuple[str, ...] = ()) -> set[str]:
    """No partial or empty file; every file under its final name holds exactly the uploaded bytes."""
    if not folder.exists():
        return set()
    parts = sorted(p.name for p in folder.iterdir() if p.name.endswith(PART_SUFFIX) and p.name not in allowed_parts)
    assert parts == [], f"partial files left behind: {parts}"
    present = {p.name for p in folder.iterdir() if not p.name.endswith(PART_SUFFIX) and p.name != MANIFEST}
    for name in present:
        data = (folder / name).read_bytes()
        assert data, f"{name} is empty"
        assert data == blobs[name], f"{name} differs from the uploaded object"
    return present


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def file_ids(folder: Path, names) -> dict[str, tuple[int, int]]:
    return {name: ((folder / name).stat().st_ino, (folder / name).stat().st_mtime_ns) for name in names}


# --------------------------------------------------------------------------- 1, 2: reading the bucket


def test_anonymous_download_fetches_every_image_unsigned(shared_bucket, proxy, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)  # anonymous reads need no credentials at all
    folder = tmp_path / "raw"

    table = download_dataset(folder, shared_bucket.params(proxy.url, anonymous=True))

    assert assert_folder_sound(folder, shared_bucket.blobs) == set(shared_bucket.blobs)
    pd.testing.assert_frame_equal(table, shared_bucket.meta, check_dtype=False)
    assert proxy.image_gets() == Counter({name: 1 for name in shared_bucket.blobs})
    assert proxy.authorization and all(header is None for header in proxy.authorization)


def test_filtered_download_is_capped_and_reproducible(bucket, proxy, tmp_path):
    params = bucket.params(proxy.url, hours=(4, 24), max_per_condition=1, sample_seed=3)

    table = download_dataset(tmp_path / "a", params)

    assert set(table["hr_post_exposure"]) == {4, 24}
    per_condition = table.groupby(["particle_type", "dose_Gy", "hr_post_exposure"]).size()
    # 12 conditions at 4 and 24 h, 2 images each: the cap of 1 keeps exactly one of each.
    assert len(per_condition) == 12 and (per_condition == 1).all()
    rows = table.merge(bucket.meta, how="left", indicator=True)
    assert (rows["_merge"] == "both").all(), "a returned row does not match meta.csv"
    assert assert_folder_sound(tmp_path / "a", bucket.blobs) == set(table["filename"])
    assert set(proxy.image_gets()) == set(table["filename"])

    # Same seed, meta.csv rows shuffled: the same images.
    bucket.put_meta(bucket.meta.sample(frac=1, random_state=7))
    again = download_dataset(tmp_path / "b", params)
    pd.testing.assert_frame_equal(again, table)
    assert {p.name for p in (tmp_path / "b").iterdir()} == {*table["filename"], MANIFEST}


def test_download_with_environment_credentials_signs_requests(shared_bucket, proxy, aws_env, tmp_path):
    folder = tmp_path / "raw"

    table = download_dataset(folder, shared_bucket.params(proxy.url, anonymous=False))

    assert len(table) == len(shared_bucket.blobs)
    assert assert_folder_sound(folder, shared_bucket.blobs) == set(shared_bucket.blobs)
    credential = f"Credential={aws_env['AWS_ACCESS_KEY_ID']}/"
    assert proxy.authorization
    for header in proxy.authorization:
        assert header and header.startswith("AWS4-HMAC-SHA256") and credential in header


def test_signed_read_without_credentials_is_a_clear_error(shared_bucket, proxy, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)

    with pytest.raises(DownloadError, match="Unable to locate credentials") as raised:
        download_dataset(tmp_path / "raw", shared_bucket.params(proxy.url, anonymous=False, retries=4))

    # Missing credentials are no transient failure: no retries, so no backoff (a count, not a clock,
    # which a loaded host can push past any bound).
    assert "after 1 attempt(s)" in str(raised.value)
    assert not (tmp_path / "raw").exists()


# --------------------------------------------------------------------------- 3: resume


def test_rerun_fetches_only_missing_or_wrong_sized_files(shared_bucket, proxy, tmp_path, capsys):
    folder = tmp_path / "raw"
    folder.mkdir()
    names = sorted(shared_bucket.blobs)
    complete, wrong_size, interrupted = names[:10], names[10], names[11]
    for name in complete:
        (folder / name).write_bytes(shared_bucket.blobs[name])
    (folder / wrong_size).write_bytes(shared_bucket.blobs[wrong_size][:-100])
    stale = f".{interrupted}.abc{PART_SUFFIX}"
    (folder / stale).write_bytes(shared_bucket.blobs[interrupted][:50])
    before = file_ids(folder, complete)

    download_dataset(folder, shared_bucket.params(proxy.url))

    assert proxy.image_gets() == Counter({name: 1 for name in names[10:]})
    assert file_ids(folder, complete) == before, "a complete file was rewritten"
    assert assert_folder_sound(folder, shared_bucket.blobs, allowed_parts=(stale,)) == set(names)
    assert f"download: {len(names) - 10} fetched, 10 already complete" in capsys.readouterr().out

    # A second run finds everything complete and fetches nothing.
    download_dataset(folder, shared_bucket.params(proxy.url))
    assert proxy.image_gets() == Counter({name: 1 for name in names[10:]})


def test_an_object_replaced_at_the_same_size_is_fetched_again(bucket, proxy, tmp_path, monkeypatch):
    folder = tmp_path / "raw"
    download_dataset(folder, bucket.params(proxy.url))
    names = sorted(bucket.blobs)
    assert proxy.image_gets() == Counter({name: 1 for name in names})

    changed = names[3]
    replacement = bytes(byte ^ 0x01 for byte in bucket.blobs[changed])  # same size, other bytes
    bucket.put(changed, replacement)
    hashed = []
    monkeypatch.setattr(s3, "_file_md5", lambda path: hashed.append(path) or "", raising=False)
    untouched = file_ids(folder, [name for name in names if name != changed])

    download_dataset(folder, bucket.params(proxy.url))

    assert proxy.image_gets() == Counter({name: 2 if name == changed else 1 for name in names})
    assert (folder / changed).read_bytes() == replacement
    assert file_ids(folder, untouched) == untouched
    assert hashed == [], "complete files were read again: the manifest should vouch for them"
    download_dataset(folder, bucket.params(proxy.url))  # and then nothing at all
    assert proxy.image_gets() == Counter({name: 2 if name == changed else 1 for name in names})
    manifest = json.loads((folder / MANIFEST).read_text())
    listed = list_objects(make_client(S3Params(endpoint_url=proxy.url, bucket=bucket.name)), bucket.name, PREFIX, 0)
    assert listed[changed].etag != f'"{hashlib.md5(bucket.blobs[changed]).hexdigest()}"'
    assert manifest == {name: {"etag": listed[name].etag, "size": listed[name].size} for name in names}
    umask = os.umask(0o022)
    os.umask(umask)
    assert (folder / MANIFEST).stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file's mode


def run_download_stage(project: Path, bucket: Bucket, endpoint: str, hours: list[int]) -> subprocess.CompletedProcess:
    """`python -m stages.download` as DVC runs it: its own process, in a project folder."""
    params = {"data": {"source": "s3", "hours": hours,
                       "s3": {"bucket": bucket.name, "endpoint_url": endpoint, "region": REGION}}}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    (project / "runtime.yaml").write_text(yaml.safe_dump({"data": {"s3": {"workers": 4}}}))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, "-m", "stages.download"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # real server faults and stage processes: seconds each
@pytest.mark.parametrize(
    ("spoil", "hours", "expected"),
    [
        (lambda meta: meta.iloc[:0], [4, 24, 48], "error: meta.csv lists no images (only a header?)"),
        (lambda meta: meta[meta["hr_post_exposure"] == 4], [24, 48],
         "error: data.hours [24, 48] selects none of the 12 images in meta.csv, whose hours are [4]"),
    ],
)
def test_an_empty_selection_is_refused_before_anything_is_pruned(bucket, proxy, tmp_path, spoil, hours, expected):
    project = tmp_path / "project"
    project.mkdir()
    first = run_download_stage(project, bucket, proxy.url, [4, 24, 48])
    assert first.returncode == 0, first.stderr
    raw = project / "data/raw"
    before = {path.name: path.read_bytes() for path in raw.iterdir()}
    assert set(before) - {MANIFEST} == {*bucket.blobs, "meta.csv"}

    bucket.put_meta(spoil(bucket.meta))
    result = run_download_stage(project, bucket, proxy.url, hours)

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
    assert {path.name: path.read_bytes() for path in raw.iterdir()} == before


# --------------------------------------------------------------------------- 4: path traversal


@pytest.mark.parametrize("evil", ["../x.tif", "/etc/x.tif", "sub/../../x.tif", "..\\x.tif"])
def test_meta_naming_a_path_outside_the_folder_is_refused(bucket, proxy, tmp_path, evil):
    bad = pd.concat([bucket.meta, bucket.meta.head(1).assign(filename=evil)], ignore_index=True)
    bucket.put_meta(bad)
    bucket.put(evil, b"evil")  # the bucket even has it

    with pytest.raises(MetaError, match=f"line {len(bad) + 1}: unsafe file name"):
        download_dataset(tmp_path / "data" / "raw", bucket.params(proxy.url))

    assert list(tmp_path.rglob("*")) == []
    assert proxy.image_gets() == Counter()


@pytest.mark.parametrize("evil", ["../escape.tif", "sub/escape.tif", "ABSOLUTE"])
def test_download_objects_refuses_names_that_escape_the_folder(shared_bucket, tmp_path, evil):
    folder = tmp_path / "raw"
    outside = tmp_path / "escape.tif"
    evil = str(outside) if evil == "ABSOLUTE" else evil
    client = make_client(S3Params(endpoint_url=shared_bucket.endpoint, bucket=shared_bucket.name))
    objects = list_objects(client, shared_bucket.name, PREFIX, retries=0)
    good = sorted(shared_bucket.blobs)[0]
    # A real object behind the evil name: were it not refused, it would be written.
    objects[evil] = objects[good]

    with pytest.raises(DownloadError, match="refusing S3 key"):
        download_objects(client, shared_bucket.name, objects, [good, evil], folder, workers=2, retries=0)

    assert list(tmp_path.rglob("*")) == []


# --------------------------------------------------------------------------- 5: transient errors


@pytest.mark.slow  # real server faults: seconds each
@pytest.mark.parametrize("fault", ["503", "drop", "cut"])
def test_transient_failures_are_retried(shared_bucket, proxy, tmp_path, fault):
    flaky = set(sorted(shared_bucket.blobs)[::10])
    meta_key = shared_bucket.key("meta.csv")
    proxy.fault = lambda key, n: (
        fault if (key == meta_key and n == 1) or (key.rsplit("/", 1)[-1] in flaky and n <= 2) else None
    )

    table = download_dataset(tmp_path / "raw", shared_bucket.params(proxy.url, retries=2))

    assert len(table) == len(shared_bucket.blobs)
    assert assert_folder_sound(tmp_path / "raw", shared_bucket.blobs) == set(shared_bucket.blobs)
    assert proxy.image_gets() == Counter({name: 3 if name in flaky else 1 for name in shared_bucket.blobs})
    assert proxy.gets[meta_key] == 2


def test_without_retries_a_throttled_object_stops_the_download_naming_its_key(shared_bucket, proxy, tmp_path):
    target = sorted(shared_bucket.blobs)[5]
    proxy.fault = lambda key, n: "503" if key == shared_bucket.key(target) else None

    with pytest.raises(DownloadError) as raised:
        download_dataset(tmp_path / "raw", shared_bucket.params(proxy.url, retries=0))

    message = str(raised.value)
    assert f"s3://{shared_bucket.name}/{shared_bucket.key(target)}" in message
    assert "SlowDown" in message and "run the stage again" in message
    assert proxy.image_gets()[target] == 1
    assert target not in assert_folder_sound(tmp_path / "raw", shared_bucket.blobs)


# --------------------------------------------------------------------------- 6: integrity


@pytest.mark.parametrize("fault", ["short", "corrupt"])
def test_bad_bytes_are_fetched_again(shared_bucket, proxy, tmp_path, fault):
    target = sorted(shared_bucket.blobs)[3]
    proxy.fault = lambda key, n: fault if key == shared_bucket.key(target) and n == 1 else None

    download_dataset(tmp_path / "raw", shared_bucket.params(proxy.url, retries=1))

    assert proxy.image_gets()[target] == 2
    assert assert_folder_sound(tmp_path / "raw", shared_bucket.blobs) == set(shared_bucket.blobs)


@pytest.mark.parametrize(("fault", "says"), [("short", "bytes"), ("corrupt", "MD5")])
def test_always_bad_bytes_fail_naming_the_key_and_leave_nothing_partial(shared_bucket, proxy, tmp_path, fault, says):
    target = sorted(shared_bucket.blobs)[3]
    proxy.fault = lambda key, n: fault if key == shared_bucket.key(target) else None

    with pytest.raises(DownloadError) as raised:
        download_dataset(tmp_path / "raw", shared_bucket.params(proxy.url, retries=1))

    assert f"s3://{shared_bucket.name}/{shared_bucket.key(target)}" in str(raised.value)
    assert says in str(raised.value)
    assert proxy.image_gets()[target] == 2
    assert target not in assert_folder_sound(tmp_path / "raw", shared_bucket.blobs)


def test_multipart_object_is_checked_by_size(bucket, proxy, tmp_path):
    """A multipart ETag (``"<md5 of md5s>-<parts>"``) is no MD5 of the bytes: it must not fail them."""
    target = sorted(bucket.blobs)[0]
    data = np.random.default_rng(2).bytes(6 * 1024 * 1024 + 1)
    bucket.uploader.upload_fileobj(
        io.BytesIO(data),
        bucket.name,
        bucket.key(target),
        ExtraArgs={"ACL": "public-read"},
        Config=TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024),
    )
    client = make_client(S3Params(endpoint_url=proxy.url, bucket=bucket.name))
    remote = list_objects(client, bucket.name, PREFIX, retries=0)[target]
    assert remote.etag.endswith('-2"') and remote.md5 is None and remote.size == len(data)

    download_dataset(tmp_path / "raw", bucket.params(proxy.url))

    assert assert_folder_sound(tmp_path / "raw", {**bucket.blobs, target: data}) == set(bucket.blobs)


# --------------------------------------------------------------------------- 7: the server dies


@pytest.mark.slow  # real server faults and stage processes: seconds each
def test_server_dying_mid_download_keeps_whole_files_and_a_rerun_resumes(make_bucket, many_small, make_proxy, tmp_path):
    bucket = make_bucket(many_small)
    folder = tmp_path / "raw"
    dying = make_proxy()
    dying.body_delay_s = 0.02  # every body pauses half-way: downloads are in flight when it dies
    dying.kill_after = 60

    start = time.monotonic()
    with pytest.raises(DownloadError, match="run the stage again") as raised:
        download_dataset(folder, bucket.params(dying.url, workers=8, retries=1))

    assert time.monotonic() - start < 20
    assert f"s3://{bucket.name}/{PREFIX}/" in str(raised.value)
    kept = assert_folder_sound(folder, bucket.blobs)
    assert 0 < len(kept) < len(bucket.blobs)
    assert sum(dying.image_gets().values()) > len(kept), "no download was cut short"
    assert f"{len(kept)} of {len(bucket.blobs)} files are complete" in str(raised.value)
    before = file_ids(folder, kept)

    live = make_proxy()
    download_dataset(folder, bucket.params(live.url, workers=8, retries=1))

    assert live.image_gets() == Counter({name: 1 for name in set(bucket.blobs) - kept})
    assert file_ids(folder, kept) == before
    assert assert_folder_sound(folder, bucket.blobs) == set(bucket.blobs)


# --------------------------------------------------------------------------- 8: meta.csv problems


def _drop_column(meta: pd.DataFrame) -> pd.DataFrame:
    return meta.drop(columns="dose_Gy")


def _unknown_particle(meta: pd.DataFrame) -> pd.DataFrame:
    return meta.assign(particle_type=meta["particle_type"].where(meta.index != 4, "Proton"))


def _unknown_dose(meta: pd.DataFrame) -> pd.DataFrame:
    meta = meta.copy()
    meta.loc[7, "dose_Gy"] = 0.5
    return meta


def _duplicate_name(meta: pd.DataFrame) -> pd.DataFrame:
    meta = meta.copy()
    meta.loc[9, "filename"] = meta.loc[2, "filename"]
    return meta


@pytest.mark.parametrize(
    ("spoil", "expected"),
    [
        (_drop_column, r"missing column\(s\) \['dose_Gy'\]"),
        (_unknown_particle, r"line 6: unknown particle_type 'Proton'"),
        (_unknown_dose, r"line 9: dose_Gy 0\.5 is not a known (Fe|X-ray) dose"),
        (_duplicate_name, r"line 11: duplicated file name 'P"),
    ],
)
def test_bad_meta_csv_in_the_bucket_is_one_clear_error(bucket, proxy, tmp_path, spoil, expected):
    bucket.put_meta(spoil(bucket.meta))

    with pytest.raises(MetaError, match=expected) as raised:
        download_dataset(tmp_path / "raw", bucket.params(proxy.url))

    assert "\n" not in str(raised.value)
    assert proxy.image_gets() == Counter()
    assert not (tmp_path / "raw").exists()


def test_meta_listing_a_file_the_bucket_lacks_names_it(bucket, proxy, tmp_path):
    name = "P242_73665006707-A6_001_009_proj.tif"
    bucket.put_meta(pd.concat([bucket.meta, bucket.meta.head(1).assign(filename=name)], ignore_index=True))

    with pytest.raises(DownloadError, match=name):
        download_dataset(tmp_path / "raw", bucket.params(proxy.url))

    assert proxy.image_gets() == Counter()


# --------------------------------------------------------------------------- 9: unreachable endpoint


def test_unreachable_endpoint_fails_fast_with_a_hint(aws_env, tmp_path):
    params = DataParams(source="s3", s3=S3Params(endpoint_url=f"http://127.0.0.1:{closed_port()}", retries=4))

    start = time.monotonic()
    with pytest.raises(DownloadError) as raised:
        download_dataset(tmp_path / "raw", params)

    assert time.monotonic() - start < 10
    message = str(raised.value)
    assert "cannot reach" in message and "data.source" in message and "endpoint_url" in message
    assert not (tmp_path / "raw").exists()


def test_missing_bucket_names_it(proxy, aws_env, tmp_path):
    params = DataParams(source="s3", s3=S3Params(endpoint_url=proxy.url, bucket="no-such-bucket-here", retries=4))

    start = time.monotonic()
    with pytest.raises(DownloadError, match="s3://no-such-bucket-here/Microscopy/train/meta.csv: NoSuchBucket"):
        download_dataset(tmp_path / "raw", params)

    assert time.monotonic() - start < 5
