"""End to end: a DVC remote on S3 (moto on 127.0.0.1) carries a reproduced project to a fresh clone.

The endpoint and the credentials live only in ``.dvc/config.local`` (git-ignored); the `dvc`
subprocesses get no AWS credentials from the environment, so every push and pull must use it.
"""

from __future__ import annotations

import pytest

from tests.support.dvc_project import (
    copy_project,
    dvc,
    git,
    isolated_env,
    output_of,
    reproduced_project,
    stages_run,
)
from tests.support.s3_server import FAKE_KEY_ID, FAKE_SECRET, new_bucket, s3_client

pytestmark = pytest.mark.slow

# Outputs DVC keeps in its cache (not in git): what a clone must pull.
CACHED_OUTPUTS = ("data/raw", "data/split", "data/prepared", "models/baseline", "models/lenet")


def configure_remote_locally(repo, env, endpoint_url: str) -> None:
    """Endpoint and credentials go to .dvc/config.local only: machine-specific, never committed."""
    for option, value in (
        ("endpointurl", endpoint_url),
        ("access_key_id", FAKE_KEY_ID),
        ("secret_access_key", FAKE_SECRET),
    ):
        dvc(repo, env, "remote", "modify", "--local", "storage", option, value)


def test_push_then_pull_into_a_fresh_clone(tmp_path_factory, tmp_path, moto_server):
    built = reproduced_project(tmp_path_factory)
    origin = copy_project(built.root, tmp_path / "origin")
    env = isolated_env(tmp_path / "sandbox", aws_credentials=False)
    bucket = new_bucket(moto_server, "dvc-remote")

    dvc(origin, env, "remote", "add", "-d", "storage", f"s3://{bucket}/dvcstore")
    configure_remote_locally(origin, env, moto_server)
    pushed = dvc(origin, env, "push")
    assert "pushed" in output_of(pushed)
    stored = s3_client(moto_server).list_objects_v2(Bucket=bucket, Prefix="dvcstore/")
    assert stored.get("KeyCount", 0) > 0
    assert dvc(origin, env, "status", "--cloud", "--json").stdout.strip() in ("{}", "")
    git(origin, env, "add", "-A")
    git(origin, env, "commit", "-q", "-m", "DVC remote on S3")
    assert git(origin, env, "status", "--porcelain") == ""

    clone = tmp_path / "clone"
    git(tmp_path, env, "clone", "-q", str(origin), str(clone))
    for output in CACHED_OUTPUTS:
        assert not (clone / output).exists(), output
    # The clone knows the remote's URL (committed) but neither its endpoint nor any credential.
    assert f"s3://{bucket}/dvcstore" in (clone / ".dvc/config").read_text()
    assert not (clone / ".dvc/config.local").exists()
    configure_remote_locally(clone, env, moto_server)
    git(clone, env, "check-ignore", "-q", ".dvc/config.local")

    dvc(clone, env, "pull")

    for output in CACHED_OUTPUTS:
        assert (clone / output).is_dir(), output
    assert "Data and pipelines are up to date" in output_of(dvc(clone, env, "status", "dvc.yaml"))
    assert stages_run(dvc(clone, env, "repro")) == []
    assert git(clone, env, "status", "--porcelain") == ""

    # The pulled models score the test split exactly as the originals did.
    rescored = dvc(clone, env, "repro", "-f", "-s", "evaluate")
    assert stages_run(rescored) == ["evaluate"]
    assert (clone / "metrics/evaluate.json").read_bytes() == (origin / "metrics/evaluate.json").read_bytes()
    assert git(clone, env, "status", "--porcelain") == ""

    host_port = moto_server.removeprefix("http://")
    for name in git(clone, env, "ls-files", "-z").split("\0"):
        if not name:
            continue
        content = (clone / name).read_bytes()
        for secret in (host_port, FAKE_KEY_ID, FAKE_SECRET):
            assert secret.encode() not in content, f"{secret!r} is in the git-tracked file {name}"
    assert ".dvc/config.local" not in git(clone, env, "ls-files")
