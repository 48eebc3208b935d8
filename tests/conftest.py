"""Shared fixtures: an isolated AWS environment, a real S3 server (moto) on loopback, the reproduced
tiny project; and the ``e2e`` marker on every test under tests/e2e/.

The tests mirror the package (tests/<subpackage>/test_<module>.py); tests/e2e/ holds the ones
that run whole pipelines, servers or commands; tests/support/ the helpers they share.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.support.dvc_project import Reproduced, copy_project, reproduced_project
from tests.support.s3_server import start_moto_server

FAKE_KEY_ID = "AKIATESTFAKEKEY00000"
FAKE_SECRET = "fake-secret-for-tests-only"


def isolate_aws(monkeypatch: pytest.MonkeyPatch, folder: Path) -> dict[str, str]:
    """Fake credentials, and nothing else from the machine: no ~/.aws, no profile, no metadata service.

    Every ``AWS_*`` variable is cleared first, so a developer's own settings (or an
    ``AWS_ENDPOINT_URL``) can neither leak into a test nor send a request off this machine.
    """
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)
    env = {
        "AWS_ACCESS_KEY_ID": FAKE_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
        "AWS_SHARED_CREDENTIALS_FILE": str(folder / "no-aws-credentials"),
        "AWS_CONFIG_FILE": str(folder / "no-aws-config"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def aws_env(monkeypatch, tmp_path) -> dict[str, str]:
    """:func:`isolate_aws` for one test."""
    return isolate_aws(monkeypatch, tmp_path)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """One real S3 server (moto's server mode) on 127.0.0.1 for the session; yields its URL.

    Tests share it and each makes buckets of its own.
    """
    server, endpoint_url = start_moto_server()
    try:
        yield endpoint_url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Reproduced:
    """The tiny pipeline reproduced once per test module (tests/e2e/test_pipeline_dvc.py)."""
    return reproduced_project(tmp_path_factory)


@pytest.fixture
def workspace(built, tmp_path) -> Path:
    """A private copy of the reproduced project (its git history, DVC cache and outputs)."""
    return copy_project(built.root, tmp_path / "project")


@pytest.fixture
def restore_torch_global_state():
    """make_deterministic changes process-wide torch settings: put them back for other tests."""
    mode = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    rng = torch.get_rng_state()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    yield
    torch.utils.deterministic.fill_uninitialized_memory = fill
    if (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) != (
        mode,
        warn_only,
    ):
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    torch.set_rng_state(rng)


E2E = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/e2e/ is end to end: ``-m "not slow and not e2e"`` is the fast tier."""
    for item in items:
        if Path(item.path).is_relative_to(E2E):
            item.add_marker(pytest.mark.e2e)
