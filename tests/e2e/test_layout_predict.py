"""A 4-channel (HPA) and a 6-channel (RxRx1) ResNet-18, trained by the real stages on the offline
fixtures, predict one sample from its channel files: Python, the CLI and the HTTP service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from bps.core.params import merged
from bps.data.layouts.toy import write_hpa, write_rxrx1
from bps.serving.app import create_app
from bps.serving.predictor import Predictor
from tests.support.service import post, running

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["check_params", "layouts.download", "layouts.split", "layouts.preprocess", "train_lenet"]


@pytest.fixture(scope="module", params=["hpa", "rxrx1"])
def trained(request, tmp_path_factory) -> Path:
    """A project folder where the stages trained a ResNet-18 (one epoch, 32 px) on the dataset's toy copy."""
    dataset, root = request.param, tmp_path_factory.mktemp(request.param)
    {"hpa": write_hpa, "rxrx1": write_rxrx1}[dataset](root / "fixture")
    params = merged(yaml.safe_load((ROOT / "params.yaml").read_text()),
                    yaml.safe_load((ROOT / "datasets" / dataset / "params.yaml").read_text()))
    params["data"]["layout"]["root"] = str(root / "fixture")
    params["preprocess"]["image_size"] = 32
    params["train"] |= {"model": "resnet18", "epochs": 1, "device": "cpu"}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for stage in STAGES:
        subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=root, env=env, check=True, capture_output=True)
    return root


def sample_files(root: Path, row: int) -> list[Path]:
    """The raw channel files of test sample ``row``, in channel order."""
    table = pd.read_csv(root / "data" / "prepared" / "test.csv", dtype=str)
    return [root / "data" / "raw" / table.loc[row, column] for column in table.columns if column.startswith("file_")]


@pytest.mark.slow
def test_a_multichannel_model_predicts_a_sample_as_evaluate_scores_it(trained):
    card = json.loads((trained / "models" / "lenet" / "model.json").read_text())
    predictor = Predictor(trained / "models" / "lenet")
    files = sample_files(trained, 0) + sample_files(trained, 1)
    assert len(files) == 2 * card["in_channels"] and card["in_channels"] == len(card["channels"])
    table = predictor.predict_files(files)
    assert len(table) == 2
    prepared = np.load(trained / "data" / "prepared" / "test_images.npy")[:2]
    np.testing.assert_allclose(table[[f"p_{name}" for name in card["classes"]]].to_numpy(),
                               predictor.predict_proba(prepared), atol=1e-6)  # the preprocessing of training
    if card["multilabel"]:
        over = table[[f"p_{name}" for name in card["classes"]]].to_numpy() >= np.array(card["thresholds"])
        assert [set(labels.split()) for labels in table["predicted"]] == [
            {name for name, chosen in zip(card["classes"], row) if chosen} for row in over]
    else:
        assert set(table["predicted"]) <= set(card["classes"])


@pytest.mark.slow
def test_the_cli_takes_one_file_per_channel_and_names_them_when_one_is_missing(trained, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    files = [str(path) for path in sample_files(trained, 0)]
    command = [sys.executable, "-m", "bps", "predict", "models/lenet", *files, "--out", str(tmp_path / "p.json")]
    subprocess.run(command, cwd=trained, env=env, check=True, capture_output=True)
    [row] = json.loads((tmp_path / "p.json").read_text())
    assert row["file"] == " ".join(files)
    short = subprocess.run(command[:-3] + command[-2:], cwd=trained, env=env, capture_output=True, text=True)
    channels = json.loads((trained / "models" / "lenet" / "model.json").read_text())["channels"]
    assert short.returncode == 1
    assert short.stderr == (f"error: models/lenet takes {len(files)} files per sample, one per channel in this "
                            f"order: {', '.join(channels)}; got {len(files) - 1} ({', '.join(files[:-1])})\n")


@pytest.mark.slow
def test_the_service_answers_once_per_sample_of_channel_files(trained):
    files = sample_files(trained, 0)
    predictor = Predictor(trained / "models" / "lenet")
    expected = predictor.predict_files(files)
    with running(create_app(trained / "models" / "lenet")) as url:
        description = httpx.get(f"{url}/model").json()
        response = post(url, [(path.name, path.read_bytes()) for path in files])
        short = post(url, [(path.name, path.read_bytes()) for path in files[:-1]])
    assert description["input"]["channel_files"] == predictor.channels
    assert response.status_code == 200, response.text
    [prediction] = response.json()["predictions"]
    assert prediction["file"] == " ".join(path.name for path in files)
    assert prediction["predicted"] == expected["predicted"][0]
    assert prediction["probabilities"] == pytest.approx(
        {name: expected[f"p_{name}"][0] for name in predictor.classes}, abs=1e-6)
    assert short.status_code == 422 and f"takes {len(files)} files per sample" in short.json()["detail"]
