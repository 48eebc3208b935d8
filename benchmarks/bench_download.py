"""Download: the project's concurrent, verified download vs a plain sequential boto3 loop."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3

from benchmarks.common import Row, loopback_s3, simulated_tiffs, timed
from bps.core.files import remove_partials
from bps.core.params import S3Params
from bps.data.s3 import download_objects, list_objects, make_client

BUCKET = "bench-bps"
PREFIX = "Microscopy/train"


def _fill_bucket(client, sources: list[bytes], count: int) -> list[str]:
    client.create_bucket(Bucket=BUCKET)
    names = [f"obj_{index:05d}_proj.tif" for index in range(count)]
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda i: client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{names[i]}", Body=sources[i % len(sources)]),
                range(count),
            )
        )
    return names


def _empty(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    remove_partials(folder)
    for entry in folder.iterdir():
        entry.unlink()


def sequential_loop(client, names: list[str], folder: Path) -> None:
    """The study's way: one GET after another."""
    for name in names:
        body = client.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{name}")["Body"].read()
        (folder / name).write_bytes(body)


def add_latency(client, seconds: float) -> None:
    """Emulate a network round trip: every request waits ``seconds`` before it is sent."""
    client.meta.events.register("before-send.s3.*", lambda **_: time.sleep(seconds))


def compare(url: str, names: list[str], folder: Path, latency_s: float) -> tuple[float, float, int]:
    """Best-of-two seconds for the sequential loop and for the project, interleaved."""
    plain = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    params = S3Params(bucket=BUCKET, prefix=PREFIX, endpoint_url=url, anonymous=False, region="us-east-1")
    client = make_client(params)
    objects = list_objects(client, BUCKET, PREFIX, retries=2)
    for each in (plain, client):
        add_latency(each, latency_s)
    sequential, project = [], []
    for _ in range(2):  # interleaved, so drift on a noisy machine hits both alike
        _empty(folder)
        sequential.append(timed(lambda: sequential_loop(plain, names, folder)))
        _empty(folder)
        project.append(
            timed(lambda: download_objects(client, BUCKET, objects, names, folder, params.workers, params.retries))
        )
    return min(sequential), min(project), params.workers


def run(workdir: Path, quick: bool) -> list[Row]:
    count = 200 if quick else 2000
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_EC2_METADATA_DISABLED="true")
    tiffs = workdir / "download-sources"
    table = simulated_tiffs(tiffs, 40)
    sources = [(tiffs / name).read_bytes() for name in table["filename"]]
    folder = workdir / "download-target"
    rows = []
    with loopback_s3() as url:
        names = _fill_bucket(boto3.client("s3", endpoint_url=url, region_name="us-east-1"), sources, count)
        for latency_ms, suffix in ((0, ""), (20, "_rtt20ms")):
            seq, proj, workers = compare(url, names, folder, latency_ms / 1000)
            where = "loopback" if not latency_ms else f"loopback + {latency_ms} ms emulated round trip"
            rows += [
                Row(
                    f"download_vs_sequential{suffix}",
                    seq / proj,
                    "x",
                    f"{count} objects, {workers} workers vs 1, {where}",
                ),
                Row(
                    f"download_objects_per_s{suffix}",
                    count / proj,
                    "objects/s",
                    f"sequential: {count / seq:.0f} objects/s",
                ),
            ]
    return rows
