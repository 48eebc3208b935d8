"""A real S3 server (moto's server mode) on loopback, for tests that run `dvc` in subprocesses.

The subprocesses reach it over HTTP on 127.0.0.1, so nothing leaves the machine. Every server
started in one process shares moto's in-memory backend: give each test its own bucket.
"""

from __future__ import annotations

import logging
import uuid

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

FAKE_KEY_ID = "AKIADVCTESTFAKE00000"
FAKE_SECRET = "dvc-test-fake-secret-never-real"
REGION = "us-east-1"


def start_moto_server() -> tuple[ThreadedMotoServer, str]:
    """Start a moto S3 server on 127.0.0.1 and a free port; return it and its endpoint URL."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def s3_client(endpoint_url: str):
    """A boto3 client for the local server with the fake credentials (no ~/.aws, no env)."""
    session = boto3.session.Session(
        aws_access_key_id=FAKE_KEY_ID, aws_secret_access_key=FAKE_SECRET, region_name=REGION
    )
    return session.client("s3", endpoint_url=endpoint_url, config=Config(retries={"max_attempts": 2}))


def new_bucket(endpoint_url: str, prefix: str) -> str:
    """Create a bucket with a unique name on the server; return its name."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint_url).create_bucket(Bucket=name)
    return name
