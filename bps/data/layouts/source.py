"""Where a layout's files come from: a local folder or ``s3://bucket/prefix``, copied into data/raw/.

The metadata and every channel file of every sample keep their paths relative to
``data.layout.root``. From S3 the files come through bps/data/s3.py (concurrent, verified, atomic,
resumable by its ETag manifest) with ``data.s3``'s endpoint, credentials, workers and retries;
from a folder they are copied atomically, skipping files already copied (same size and time).
A file the metadata names but the root lacks stops the download before anything is copied.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from bps.core.files import atomic_open
from bps.core.params import DataParams, S3Params
from bps.data.layouts.meta import SAMPLE, LayoutError, channel_columns, files_of, normalise, read_metadata
from bps.data.s3 import download_objects, fetch_bytes, list_objects, make_client, object_key

S3_SCHEME = "s3://"
FIXTURE_HINT = "for the offline fixtures run `python -m bps toy-data hpa fixtures/hpa` (or rxrx1 fixtures/rxrx1) first"


def s3_location(root: str, s3: S3Params) -> S3Params | None:
    """``data.s3`` pointed at an ``s3://bucket/prefix`` root (None for a local root)."""
    if not root.startswith(S3_SCHEME):
        return None
    bucket, _, prefix = root.removeprefix(S3_SCHEME).partition("/")
    if not bucket:
        raise LayoutError(f"data.layout.root {root!r} names no bucket (expected s3://bucket/prefix)")
    return s3.model_copy(update={"bucket": bucket, "prefix": prefix.strip("/")})


def read_metadata_bytes(data: DataParams) -> bytes:
    """The metadata CSV's bytes, from the root."""
    layout = data.layout
    s3 = s3_location(layout.root, data.s3)
    if s3 is not None:
        return fetch_bytes(make_client(s3), s3.bucket, object_key(s3.prefix, layout.metadata), s3.retries)
    path = Path(layout.root) / layout.metadata
    check_inside(Path(layout.root), layout.metadata)
    if not path.is_file():
        raise LayoutError(f"data.layout: metadata {path} does not exist ({FIXTURE_HINT})")
    return path.read_bytes()


def load_layout(data: DataParams) -> tuple[bytes, pd.DataFrame]:
    """The metadata's bytes and its normalised table (bps/data/layouts/meta.py); check-params runs this too."""
    raw = read_metadata_bytes(data)
    return raw, normalise(read_metadata(raw, data.layout), data.layout)


def _missing(table: pd.DataFrame, missing: list[str], where: str, total: int) -> LayoutError:
    """An error naming the first missing file, its sample and channel."""
    name = missing[0]
    columns = channel_columns(table)
    row = table[table[columns].eq(name).any(axis=1)].iloc[0]
    channel = next(column for column in columns if row[column] == name).removeprefix("file_")
    return LayoutError(
        f"data.layout: {where} (sample {row[SAMPLE]!r}, channel {channel!r}) does not exist; "
        f"{len(missing)} of {total} files are missing; nothing was downloaded"
    )


def check_inside(root: Path, name: str) -> None:
    """Refuse a root's file that is a symlink or resolves outside the root (``..``, a linked folder):
    a link to /etc/passwd in a shared folder would otherwise be copied into data/raw/."""
    path = root / name
    if path.is_symlink():
        raise LayoutError(f"data.layout: {path} is a symbolic link (to {os.readlink(path)}); "
                          "links are not followed: copy the file into the root; nothing was downloaded")
    if not path.resolve().is_relative_to(root.resolve()):
        raise LayoutError(f"data.layout: {path} resolves to {path.resolve()}, outside the root {root}; "
                          "nothing was downloaded")


def copy_files(root: Path, table: pd.DataFrame, folder: Path) -> int:
    """Copy every channel file from a local root; return how many were copied (not already there).
    Every file is checked (present, no link, inside the root) before the first is copied."""
    names = files_of(table)
    for name in names:
        check_inside(root, name)
    missing = [name for name in names if not (root / name).is_file()]
    if missing:
        raise _missing(table, missing, str(root / missing[0]), len(names))
    copied = 0
    for name in tqdm(names, desc="download", unit="file"):
        source, target = root / name, folder / name
        stat = source.stat()
        if target.is_file() and (target.stat().st_size, target.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns):
            continue
        with open(source, "rb") as reader, atomic_open(target) as writer:
            shutil.copyfileobj(reader, writer)
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        copied += 1
    return copied


def fetch_files(s3: S3Params, table: pd.DataFrame, folder: Path) -> int:
    """Fetch every channel file from S3; return how many were fetched (not already complete)."""
    names = files_of(table)
    client = make_client(s3)
    objects = list_objects(client, s3.bucket, s3.prefix, s3.retries)
    missing = [name for name in names if name not in objects]
    if missing:
        raise _missing(table, missing, f"s3://{s3.bucket}/{object_key(s3.prefix, missing[0])}", len(names))
    return download_objects(client, s3.bucket, objects, names, folder, s3.workers, s3.retries, nested=True)


def download_layout(folder: Path, data: DataParams) -> pd.DataFrame:
    """Copy or fetch the metadata and every channel file into ``folder``; return the normalised table."""
    raw, table = load_layout(data)
    s3 = s3_location(data.layout.root, data.s3)
    fetched = fetch_files(s3, table, folder) if s3 else copy_files(Path(data.layout.root), table, folder)
    with atomic_open(folder / data.layout.metadata) as stream:
        stream.write(raw)
    print(f"download: {fetched} files fetched, {len(table) * len(data.layout.channels) - fetched} already complete")
    return table
