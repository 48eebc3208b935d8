"""Concurrent, verified, resumable downloads from S3 or any S3-compatible store.

* Anonymous by default (the NASA bucket is public); credentials come from the usual boto3
  chain (environment, ``~/.aws``), never from params.
* Each object is streamed to a hidden ``.part`` file, checked against the listed size (and
  MD5, where the ETag is one), then renamed into place: a file under its final name is whole.
* Files already present with the ETag and size recorded when they were fetched (the folder's
  ``.manifest.json``) are not fetched again, so a re-run after an interruption fetches only
  what is missing, and an object replaced in the bucket (a new ETag) is fetched again.
* Transient failures (throttling, 5xx, dropped connections, short reads) are retried with
  exponential backoff up to ``data.s3.retries`` times; then the stage stops, naming the key.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import boto3
import pandas as pd
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    FlexibleChecksumError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from tqdm import tqdm

from bps.core.errors import PipelineError
from bps.core.files import atomic_open, write_json
from bps.core.params import DataParams, S3Params
from bps.data.meta import read_meta, select_rows

CHUNK_BYTES = 1 << 20
MANIFEST = ".manifest.json"  # in the download folder: the ETag and size of each file when fetched
MANIFEST_SAVE_S = 10.0
# Codes after which the same request may well succeed.
RETRYABLE_CODES = {
    "500",
    "502",
    "503",
    "504",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeTooSkewed",
}
# Failures of the connection or of the bytes received, not of the request itself (unlike, say,
# missing credentials): the same request may well succeed.
TRANSIENT_ERRORS = (BotoConnectionError, HTTPClientError, IncompleteReadError, FlexibleChecksumError, OSError)
OFFLINE_HINT = (
    "The real bucket needs internet access. To work offline use the built-in simulator "
    "(data.source: synthetic, the default), or point data.s3.endpoint_url at a reachable "
    "S3-compatible server."
)


class DownloadError(PipelineError, RuntimeError):
    """The download cannot complete; files already complete are kept for the next run."""


class IntegrityError(IOError):
    """The bytes received do not match the listing's size or MD5."""


@dataclass(frozen=True)
class RemoteObject:
    key: str
    size: int
    etag: str

    @property
    def md5(self) -> str | None:
        """The object's MD5 when its ETag is one (single-part uploads), else None."""
        etag = self.etag.strip('"')
        return etag if len(etag) == 32 and "-" not in etag else None


def make_client(params: S3Params):
    """A thread-safe S3 client; retries are ours (they must also cover reading the body).

    ``total_max_attempts`` counts the first request: botocore's ``max_attempts: 1`` would be one
    hidden retry of its own on every request.
    """
    config = Config(
        region_name=params.region,
        signature_version=UNSIGNED if params.anonymous else None,
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=params.connect_timeout_s,
        read_timeout=60,
        max_pool_connections=params.workers,
    )
    return boto3.session.Session().client("s3", endpoint_url=params.endpoint_url, config=config)


def object_key(prefix: str, name: str) -> str:
    return f"{prefix.strip('/')}/{name}" if prefix.strip("/") else name


def _is_retryable(error: Exception) -> bool:
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = str(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        return code in RETRYABLE_CODES or status in RETRYABLE_CODES
    return isinstance(error, (*TRANSIENT_ERRORS, IntegrityError))


def _describe(error: Exception) -> str:
    if isinstance(error, NoCredentialsError):
        return f"{error} (set data.s3.anonymous: true for a public bucket, or provide AWS credentials)"
    if isinstance(error, ClientError):
        info = error.response.get("Error", {})
        return f"{info.get('Code', '?')}: {info.get('Message', '')}".strip()
    return f"{type(error).__name__}: {error}"


def _with_retries(action, what: str, retries: int, backoff_s: float, stop: threading.Event | None = None):
    """Run ``action`` until it succeeds, a non-retryable error occurs or the budget is spent."""
    for attempt in range(retries + 1):
        try:
            return action()
        except DownloadError:
            raise
        except Exception as error:  # noqa: BLE001 - classified just below
            if not _is_retryable(error) or attempt == retries or (stop is not None and stop.is_set()):
                raise DownloadError(f"{what}: {_describe(error)} (after {attempt + 1} attempt(s))") from error
            time.sleep(backoff_s * 2**attempt)
    raise AssertionError("unreachable")


def fetch_bytes(client, bucket: str, key: str, retries: int, backoff_s: float = 0.5) -> bytes:
    """Read a small object (meta.csv), retrying transient errors like any object.

    An endpoint that cannot be reached at all fails at once, with a hint.
    """

    def get() -> bytes:
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except BotoConnectionError as error:
            raise DownloadError(
                f"s3://{bucket}/{key}: cannot reach the S3 endpoint ({_describe(error)}). {OFFLINE_HINT}"
            ) from None

    return _with_retries(get, f"s3://{bucket}/{key}", retries, backoff_s)


def list_objects(client, bucket: str, prefix: str, retries: int) -> dict[str, RemoteObject]:
    """Every object under ``prefix``, by file name (one request per 1,000 objects)."""
    prefix = object_key(prefix, "")
    objects: dict[str, RemoteObject] = {}
    token: dict = {}
    while True:
        page = _with_retries(
            partial(client.list_objects_v2, Bucket=bucket, Prefix=prefix, **token),
            f"listing s3://{bucket}/{prefix}",
            retries,
            0.5,
        )
        for entry in page.get("Contents", []):
            name = entry["Key"][len(prefix) :]
            objects[name] = RemoteObject(entry["Key"], int(entry["Size"]), entry.get("ETag", ""))
        if not page.get("IsTruncated"):
            return objects
        token = {"ContinuationToken": page["NextContinuationToken"]}


def _fetch_verified(client, bucket: str, remote: RemoteObject, path: Path) -> None:
    """Stream one object to ``path`` atomically, checking its size and MD5 on the way."""
    body = client.get_object(Bucket=bucket, Key=remote.key)["Body"]
    digest = hashlib.md5(usedforsecurity=False)
    received = 0
    with atomic_open(path) as stream:
        for chunk in body.iter_chunks(CHUNK_BYTES):
            stream.write(chunk)
            digest.update(chunk)
            received += len(chunk)
        if received != remote.size:
            raise IntegrityError(f"received {received} bytes, listing says {remote.size}")
        if remote.md5 is not None and digest.hexdigest() != remote.md5:
            raise IntegrityError(f"MD5 {digest.hexdigest()} does not match ETag {remote.md5}")


class Manifest:
    """What each file in the download folder was when it was fetched: its object's ETag and size.

    ``.manifest.json`` in the folder, written atomically. A file counts as complete when it is
    there at the listed size and its recorded ETag is the listing's: an object replaced by one
    of the same size has a new ETag and is fetched again, without reading a single local file.
    A file the manifest does not know (fetched before an interruption that lost the record) is
    hashed once and kept if its MD5 is the ETag, else fetched again.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self.path = folder / MANIFEST
        self._lock = threading.Lock()
        try:
            self.entries: dict[str, dict] = json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            self.entries = {}

    def is_complete(self, path: Path, remote: RemoteObject) -> bool:
        if not path.is_file() or path.stat().st_size != remote.size:
            return False
        known = self.entries.get(self.name(path))
        if known is not None:
            return known == {"etag": remote.etag, "size": remote.size}
        if remote.md5 is not None and _file_md5(path) == remote.md5:
            self.record(self.name(path), remote)
            return True
        return False

    def name(self, path: Path) -> str:
        """A file's entry: its path below the folder (its plain name for a flat folder)."""
        return path.resolve().relative_to(self.folder).as_posix()

    def record(self, name: str, remote: RemoteObject) -> None:
        with self._lock:
            self.entries[name] = {"etag": remote.etag, "size": remote.size}

    def save(self, names: Iterable[str] | None = None) -> None:
        """Write the record atomically (only ``names``, when given: the folder's final contents)."""
        with self._lock:
            entries = self.entries if names is None else {n: self.entries[n] for n in names if n in self.entries}
            write_json(self.path, entries)


def _file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def download_objects(
    client,
    bucket: str,
    objects: dict[str, RemoteObject],
    names: list[str],
    folder: Path,
    workers: int,
    retries: int,
    backoff_s: float = 0.5,
    nested: bool = False,
) -> int:
    """Fetch the named objects into ``folder`` concurrently; return how many were fetched.

    Names are plain file names, or with ``nested`` relative paths kept below ``folder`` (a
    multi-channel layout's ``Plate1/B02_s1_w1.png``). Files already complete are skipped. The
    first object that still fails after its retries stops the remaining work and raises
    :class:`DownloadError` naming its key.
    """
    folder = folder.resolve()
    missing = [name for name in names if name not in objects]
    if missing:
        raise DownloadError(f"meta.csv lists {len(missing)} file(s) the bucket does not have, e.g. {missing[0]!r}")
    paths = []
    for name in names:
        path = (folder / name).resolve()
        inside = path.is_relative_to(folder) and path != folder if nested else path.parent == folder
        if not inside:
            raise DownloadError(f"refusing S3 key {objects[name].key!r}: it would write outside {folder}")
        paths.append((name, path))
    manifest = Manifest(folder)
    todo = [(objects[name], path) for name, path in paths if not manifest.is_complete(path, objects[name])]
    stop = threading.Event()

    def fetch(remote: RemoteObject, path: Path) -> None:
        if stop.is_set():
            return
        _with_retries(
            lambda: _fetch_verified(client, bucket, remote, path),
            f"s3://{bucket}/{remote.key}",
            retries,
            backoff_s,
            stop,
        )
        manifest.record(manifest.name(path), remote)

    last_saved = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(fetch, remote, path) for remote, path in todo]
        try:
            for future in tqdm(as_completed(futures), total=len(futures), desc="download", unit="file"):
                future.result()
                if time.monotonic() - last_saved > MANIFEST_SAVE_S:  # a kill loses at most this much record
                    manifest.save()
                    last_saved = time.monotonic()
        except BaseException:
            stop.set()
            for future in futures:
                future.cancel()
            raise
        finally:
            pool.shutdown(wait=True)
            manifest.save(names)
    return len(todo)


def download_dataset(folder: Path, data: DataParams) -> pd.DataFrame:
    """Fetch meta.csv, choose rows by the data params, and download those images into ``folder``."""
    s3 = data.s3
    client = make_client(s3)
    meta_key = object_key(s3.prefix, "meta.csv")
    table = read_meta(fetch_bytes(client, s3.bucket, meta_key, s3.retries))
    table = select_rows(table, data.hours, data.max_per_condition, data.sample_seed)
    objects = list_objects(client, s3.bucket, s3.prefix, s3.retries)
    names = table["filename"].tolist()
    try:
        fetched = download_objects(client, s3.bucket, objects, names, folder, s3.workers, s3.retries)
    except DownloadError as error:
        manifest = Manifest(folder)
        complete = sum(manifest.is_complete(folder / name, objects[name]) for name in names if name in objects)
        raise DownloadError(
            f"{error}\n{complete} of {len(names)} files are complete and kept; "
            "run the stage again to fetch only the rest."
        ) from error
    print(f"download: {fetched} fetched, {len(names) - fetched} already complete")
    return table
