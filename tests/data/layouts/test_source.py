"""Copying a layout from a folder or fetching it from S3 (moto on loopback), every file kept where it was."""

from __future__ import annotations

import uuid

import pytest

from bps.core.params import (
    DataParams,
    S3Params,
)
from bps.data.layouts.meta import (
    LayoutError,
    files_of,
)
from bps.data.layouts.source import download_layout
from bps.data.layouts.toy import write_hpa
from tests.support.layouts import data_of, layout_of
from tests.support.s3_server import s3_client


def test_download_from_a_folder_copies_every_file_keeping_paths(rxrx1, tmp_path):
    folder = tmp_path / "raw"
    table = download_layout(folder, data_of("rxrx1", rxrx1))
    assert len(files_of(table)) == 152 * 6
    for name in files_of(table)[:12]:
        assert (folder / name).read_bytes() == (rxrx1 / name).read_bytes()
    assert (folder / "metadata.csv").read_bytes() == (rxrx1 / "metadata.csv").read_bytes()
    assert download_layout(folder, data_of("rxrx1", rxrx1)).equals(table)  # a re-run copies nothing new


def test_a_missing_channel_file_is_named_before_anything_is_copied(hpa, tmp_path):
    root = tmp_path / "hpa"
    write_hpa(root, images=6)
    victim = sorted((root / "train").glob("*_yellow.png"))[2]
    victim.unlink()
    with pytest.raises(LayoutError, match=rf"{victim} \(sample '{victim.name[:-11]}', channel 'yellow'\) does not "
                                          r"exist; 1 of 24 files are missing"):
        download_layout(tmp_path / "raw", data_of("hpa", root))
    assert not (tmp_path / "raw").exists()


@pytest.fixture
def rxrx1_bucket(moto_server, aws_env, rxrx1) -> str:
    """The RxRx1 fixture uploaded under s3://<bucket>/rxrx1/; returns the bucket."""
    bucket = f"layouts-{uuid.uuid4().hex[:12]}"
    client = s3_client(moto_server)
    client.create_bucket(Bucket=bucket)
    for path in rxrx1.rglob("*"):
        if path.is_file():
            client.put_object(Bucket=bucket, Key=f"rxrx1/{path.relative_to(rxrx1).as_posix()}", Body=path.read_bytes())
    return bucket


@pytest.mark.slow
def test_download_from_s3_fetches_every_file_and_resumes(rxrx1_bucket, moto_server, rxrx1, tmp_path):
    data = DataParams(source="layout", layout=layout_of("rxrx1", f"s3://{rxrx1_bucket}/rxrx1"),
                      s3=S3Params(endpoint_url=moto_server, anonymous=False, region="us-east-1", workers=8, retries=1))
    folder = tmp_path / "raw"
    table = download_layout(folder, data)
    names = files_of(table)
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png")) == sorted(names)
    assert all((folder / name).read_bytes() == (rxrx1 / name).read_bytes() for name in names[::37])
    (folder / names[5]).unlink()
    download_layout(folder, data)
    assert (folder / names[5]).read_bytes() == (rxrx1 / names[5]).read_bytes()
    s3_client(moto_server).delete_object(Bucket=rxrx1_bucket, Key=f"rxrx1/{names[7]}")
    with pytest.raises(LayoutError, match=rf"s3://{rxrx1_bucket}/rxrx1/{names[7]} \(sample '.+', channel '2'\) "
                                          "does not exist"):
        download_layout(tmp_path / "other", data)


@pytest.mark.parametrize("link", ["file", "folder"])
def test_a_channel_file_that_links_outside_the_root_is_refused_before_anything_is_copied(tmp_path, link):
    root = tmp_path / "hpa"
    write_hpa(root, images=6)
    secret = tmp_path / "outside" / "secret.png"
    secret.parent.mkdir()
    secret.write_bytes(b"not for data/raw")
    victim = sorted((root / "train").glob("*_yellow.png"))[2]
    if link == "file":
        victim.unlink()
        victim.symlink_to(secret)
        words = rf"^data.layout: {victim} is a symbolic link \(to {secret}\)"
    else:  # a real folder beside the root, reached through a linked folder inside it
        for path in (root / "train").iterdir():
            (secret.parent / path.name).write_bytes(path.read_bytes())
        (root / "train").rename(tmp_path / "moved")
        (root / "train").symlink_to(secret.parent)
        words = rf"^data.layout: {root}/train/(\S+) resolves to {secret.parent}/\1, outside the root {root};"
    with pytest.raises(LayoutError, match=words):
        download_layout(tmp_path / "raw", data_of("hpa", root))
    assert not (tmp_path / "raw").exists()
