"""The service's OpenAPI schema tells the truth: schemathesis fuzzes a real server against it, plus explicit checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bps.serving.app import create_app
from tests.serving.test_app_limits import serving
from tests.support.service import lenet_folder

SCHEMATHESIS = Path(sys.executable).with_name("st")
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return lenet_folder(tmp_path_factory.mktemp("models") / "lenet")


def test_predict_declares_its_real_errors_and_requires_files(model):
    schema = create_app(model).openapi()
    operation = schema["paths"]["/predict"]["post"]
    assert set(operation["responses"]) == {"200", "400", "408", "413", "415", "422", "503"}
    for status in ("400", "408", "413", "415", "422", "503"):
        reference = operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        assert reference == "#/components/schemas/ErrorDetail"
    assert schema["components"]["schemas"]["ErrorDetail"]["properties"]["detail"]["type"] == "string"
    assert "HTTPValidationError" not in schema["components"]["schemas"]  # FastAPI's 422 list: not what we send
    body = operation["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].split("/")[-1]
    form = schema["components"]["schemas"][body]
    assert form["required"] == ["files"]
    assert form["properties"]["files"]["minItems"] == 1


@pytest.mark.slow
def test_schemathesis_finds_no_mismatch_against_a_real_server(model):
    with serving(model) as (url, _):
        command = [
            str(SCHEMATHESIS),
            "--config-file",
            str(CONFIG),
            "run",
            f"{url}/openapi.json",
            "--max-examples",
            "50",
            "--generation-deterministic",  # the same cases every run
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "passed" in result.stdout
