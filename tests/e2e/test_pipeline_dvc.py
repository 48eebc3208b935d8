"""End to end: the real `dvc` CLI reproduces the pipeline in a throwaway git repo of this project.

One project is built and reproduced once per session on a tiny configuration (48 simulated
images, 32×32, one epoch, 20 lr-find steps); tests that change it work on a copy. Everything
runs offline: the S3 source is a moto server on 127.0.0.1. The helpers live in
tests/support/dvc_project.py.
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
import yaml

from bps.sim.render import DEFLATE, plan_dataset, simulate_image
from bps.targets.labels import get_target
from tests.support.dvc_project import METRIC_KEYS, SCORED, STAGES, dvc, git, output_of, read_json, run, stages_run
from tests.support.s3_server import new_bucket, s3_client

pytestmark = pytest.mark.slow


# ---------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class NasaBucket:
    endpoint_url: str
    bucket: str
    table: pd.DataFrame  # every image in the bucket (4 h and 24 h)
    tiffs: dict[str, bytes]


@pytest.fixture(scope="module")
def nasa_bucket(moto_server: str) -> NasaBucket:
    """A local S3 bucket laid out like the NASA one: Microscopy/train/meta.csv and Deflate TIFFs."""
    endpoint_url = moto_server
    bucket = new_bucket(endpoint_url, "bps-nasa-layout")
    client = s3_client(endpoint_url)
    # Another seed than the synthetic source's, and 24 h images the 4 h config must leave out.
    table = plan_dataset(8, [4, 24], seed=1)
    tiffs = {}
    for name, dose, particle, hours in table.itertuples(index=False):
        stream = io.BytesIO()
        tifffile.imwrite(stream, simulate_image(name, particle, dose, hours, seed=1), compression=DEFLATE)
        tiffs[name] = stream.getvalue()
        client.put_object(Bucket=bucket, Key=f"Microscopy/train/{name}", Body=tiffs[name], ACL="public-read")
    client.put_object(
        Bucket=bucket, Key="Microscopy/train/meta.csv", Body=table.to_csv(index=False).encode(), ACL="public-read"
    )
    return NasaBucket(endpoint_url, bucket, table, tiffs)


# ---------------------------------------------------------------- tests


def test_repro_builds_every_output_then_has_nothing_to_do(built):
    root = built.root
    ran = stages_run(built.repro)
    assert sorted(ran) == sorted(STAGES) and ran[0] == "check-params"
    assert ran.index("evaluate") > max(ran.index(stage) for stage in STAGES if stage.startswith("train-"))

    for split in ("train", "val", "test"):
        images = np.load(root / "data/prepared" / f"{split}_images.npy")
        rows = len(pd.read_csv(root / "data/prepared" / f"{split}.csv"))
        assert images.dtype == np.uint8
        assert images.shape == (rows, 1, 32, 32)
        assert rows > 0

    raw_meta = pd.read_csv(root / "data/raw/meta.csv")
    assert len(raw_meta) == 6 * 8  # six 4 h conditions, 8 images each
    assert set(raw_meta["hr_post_exposure"]) == {4}

    results = read_json(root / "metrics/evaluate.json")
    assert set(results) == {*SCORED, "paired", "paired_irradiated"}
    assert set(results["paired_irradiated"]) == set(results["paired"])
    for pair in results["paired_irradiated"].values():  # two particles: each pair also ranks the irradiated nuclei
        assert -1.0 <= pair["auc_difference"] <= 1.0 and isinstance(pair["auc_tie"], bool)
    n_test = len(pd.read_csv(root / "data/prepared/test.csv"))
    n_sham = int((pd.read_csv(root / "data/prepared/test.csv")["dose_Gy"] == 0).sum())
    for model in SCORED:
        scores = results[model]
        assert scores["control"]["n_test"] == n_sham  # the negative control is scored on test shams only
        assert scores["accuracy_ci95_low"] <= scores["accuracy"] <= scores["accuracy_ci95_high"]
        assert set(scores) >= METRIC_KEYS, model
        assert scores["n_test"] == n_test
        assert 0.0 <= scores["accuracy"] <= 1.0 and 0.0 <= scores["irradiated_auc"] <= 1.0
    for name in ("models/baseline/model.skops", "models/lenet/model.pt", "metrics/comparison.md",
                 "metrics/confusion/lenet.csv", "metrics/per_class/baseline.csv", "metrics/lr_find/curve.csv",
                 "metrics/lr_find/suggestion.json"):
        assert (root / name).is_file(), name

    again = dvc(root, built.env, "repro")
    assert stages_run(again) == []
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change" in output_of(again)
    assert "Data and pipelines are up to date" in output_of(again)
    status = dvc(root, built.env, "status", "dvc.yaml")
    assert "Data and pipelines are up to date" in output_of(status)
    assert json.loads(dvc(root, built.env, "status", "dvc.yaml", "--json").stdout) == {}


def test_runtime_settings_rerun_nothing(built, workspace):
    """Workers, retries and timeouts live in runtime.yaml, which no stage depends on: the pipeline
    stays up to date when they change, and params.yaml refuses them with one line."""
    (workspace / "runtime.yaml").write_text(yaml.safe_dump(
        {"data": {"s3": {"workers": 4, "retries": 1, "connect_timeout_s": 2}}, "preprocess": {"workers": 1}}))
    assert dvc(workspace, built.env, "status", "dvc.yaml").stdout.strip() == "Data and pipelines are up to date."
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["preprocess"]["workers"] = 1
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = dvc(workspace, built.env, "repro", check=False)
    assert result.returncode != 0
    assert "params.yaml: preprocess.workers changes speed, not results: set it in runtime.yaml" in output_of(result)


def test_exp_run_with_new_lr_reruns_only_the_cnn_what_reads_it_and_evaluation(built, workspace):
    env = built.env
    before = read_json(workspace / "metrics/evaluate.json")

    result = dvc(workspace, env, "exp", "run", "-S", "train.lr=1.5e-4")

    assert sorted(stages_run(result)) == [
        "check-params", "evaluate", "train-fusion", "train-lenet", "train-lenet-control"]
    params = json.loads(dvc(workspace, env, "params", "diff", "--json").stdout)
    assert params == {"params.yaml": {"train.lr": {"old": 0.0003, "new": 0.00015, "diff": pytest.approx(-0.00015)}}}
    metrics = json.loads(dvc(workspace, env, "metrics", "diff", "--json").stdout)
    assert set(metrics) <= {"metrics/headline.json"}  # the one file of headline figures (the rest: evaluate.json)
    changed = metrics.get("metrics/headline.json", {})
    assert not [key for key in changed if key.startswith("baseline.")]  # the baseline was not retrained
    after = read_json(workspace / "metrics/evaluate.json")
    assert after["baseline"] == before["baseline"]
    headline = read_json(workspace / "metrics/headline.json")
    assert headline["lenet"] == {"irradiated": after["lenet"]["irradiated_accuracy"],
                                 "sham": after["lenet"]["sham_accuracy"],
                                 "control": after["lenet"]["control"]["balanced_accuracy"]}
    # What changed, on a screen: the headline figures and the param (the changed models' folder hashes,
    # 38 characters each, are dropped: their figures are the headline's).
    table = dvc(workspace, {**env, "COLUMNS": "400"}, "exp", "show", "--only-changed", "--drop", "models/",
                "--no-pager").stdout
    assert "train.lr" in table and max(len(line.rstrip()) for line in table.splitlines()) <= 120, table

    shown = json.loads(dvc(workspace, env, "exp", "show", "--json").stdout)
    experiments = [
        rev for commit in shown for exp in commit.get("experiments") or [] for rev in exp["revs"]
    ]
    assert len(experiments) == 1
    data = experiments[0]["data"]
    assert data["params"]["params.yaml"]["data"]["train"]["lr"] == 1.5e-4
    assert data["metrics"]["metrics/headline.json"]["data"] == headline


def test_exp_run_with_new_size_reruns_from_preprocess(built, workspace):
    result = dvc(workspace, built.env, "exp", "run", "-S", "preprocess.image_size=28")

    # The run-cache already holds preprocess at 32 px. DVC's run-cache key ignores keys named `size`
    # (treeverse/dvc#10296), which is why the key is preprocess.image_size: a new value is no cache hit.
    assert "is cached" not in output_of(result)
    expected = ["check-params", "preprocess", "train-baseline", "train-lenet", "lr-find", "train-baseline-control",
                "train-lenet-control", "train-fusion", "evaluate"]
    assert sorted(stages_run(result)) == sorted(expected)
    train_images = np.load(workspace / "data/prepared/train_images.npy")
    assert train_images.shape[1:] == (1, 28, 28)
    assert read_json(workspace / "models/lenet/model.json")["image_size"] == 28
    assert read_json(workspace / "metrics/evaluate.json")["lenet"]["n_test"] == len(
        pd.read_csv(workspace / "data/prepared/test.csv")
    )


def test_forced_retraining_reproduces_identical_results(built, workspace):
    env = built.env
    original = (built.root / "metrics/evaluate.json").read_bytes()

    result = dvc(workspace, env, "repro", "-f", "-s", "train-lenet", "evaluate")

    assert stages_run(result) == ["train-lenet", "evaluate"]
    assert (workspace / "metrics/evaluate.json").read_bytes() == original
    # Same model hash in dvc.lock, same dvclive logs and plots: the whole commit is reproduced.
    assert git(workspace, env, "status", "--porcelain") == ""


def test_bad_parameter_fails_naming_the_key_and_allowed_values(built, workspace):
    env = built.env
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["task"]["target"] = "dose"
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    result = dvc(workspace, env, "repro", check=False)

    assert result.returncode != 0
    output = output_of(result)
    assert "task.target" in output
    assert "'particle'" in output and "'particle_dose'" in output and "'condition'" in output
    assert "'dose'" in output
    assert "error: params.yaml: task.target:" in output  # the stage's one-line message, not a traceback
    assert "Traceback" not in output
    assert "evaluate" not in stages_run(result)
    # Nothing was recorded for the failed run: the lock still describes the last good one.
    assert git(workspace, env, "status", "--porcelain", "--", "dvc.lock") == ""


def test_exp_run_from_an_s3_bucket(built, workspace, nasa_bucket):
    source = nasa_bucket
    (workspace / "runtime.yaml").write_text("data:\n  s3:\n    workers: 4\n")  # speed only: no stage reads it
    result = dvc(
        workspace,
        built.env,
        "exp", "run",
        "-S", "data.source=s3",
        "-S", f"data.s3.endpoint_url={source.endpoint_url}",
        "-S", f"data.s3.bucket={source.bucket}",
    )

    assert sorted(stages_run(result)) == sorted(STAGES)
    raw = workspace / "data/raw"
    meta = pd.read_csv(raw / "meta.csv")
    expected = source.table[source.table["hr_post_exposure"] == 4]
    assert sorted(meta["filename"]) == sorted(expected["filename"])
    assert {path.name for path in raw.iterdir()} == {*meta["filename"], "meta.csv", ".manifest.json"}
    for name in meta["filename"]:
        assert (raw / name).read_bytes() == source.tiffs[name], name

    results = read_json(workspace / "metrics/evaluate.json")
    n_test = len(pd.read_csv(workspace / "data/prepared/test.csv"))
    assert set(results) == {*SCORED, "paired", "paired_irradiated"}
    assert set(results["paired_irradiated"]) == set(results["paired"])
    for scores in (results[model] for model in SCORED):
        assert set(scores) >= METRIC_KEYS
        assert scores["n_test"] == n_test
    assert np.load(workspace / "data/prepared/train_images.npy").shape[1:] == (1, 32, 32)


def test_predict_cli_reproduces_the_evaluated_lenet_accuracy(built, tmp_path):
    root = built.root
    test_table = pd.read_csv(root / "data/prepared/test.csv")
    files = [f"data/raw/{name}" for name in test_table["filename"]]
    out = tmp_path / "preds.csv"  # outside the project, which must stay as it is

    run([sys.executable, "-m", "bps", "predict", "models/lenet", *files, "--out", str(out)], root, built.env)

    preds = pd.read_csv(out)
    assert preds["file"].tolist() == files
    target = get_target(read_json(root / "models/lenet/model.json")["target"])
    truth = [target.class_of(p, d) for p, d in zip(test_table["particle_type"], test_table["dose_Gy"])]
    accuracy = float(np.mean(preds["predicted"].to_numpy() == np.array(truth)))
    evaluated = read_json(root / "metrics/evaluate.json")["lenet"]
    assert evaluated["n_test"] == len(preds)
    assert round(accuracy, 6) == evaluated["accuracy"]  # evaluate.json keeps 6 decimals
    # Image for image, the same predictions as the evaluate stage's confusion rows.
    confusion = pd.read_csv(root / "metrics/confusion/lenet.csv")
    assert confusion["actual"].tolist() == truth
    assert preds["predicted"].tolist() == confusion["predicted"].tolist()
    probabilities = preds[[f"p_{name}" for name in target.classes]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert git(root, built.env, "status", "--porcelain") == ""


def test_exp_run_with_a_resnet18(built, workspace):
    env = built.env
    before = read_json(workspace / "metrics/evaluate.json")

    result = dvc(workspace, env, "exp", "run", "-S", "train.model=resnet18")

    assert sorted(stages_run(result)) == [
        "check-params", "evaluate", "lr-find", "train-fusion", "train-lenet", "train-lenet-control"]
    assert read_json(workspace / "metrics/lr_find/suggestion.json")["model"] == "resnet18"
    info = read_json(workspace / "models/lenet/model.json")
    assert info["architecture"] == "resnet18"
    assert info["training"]["model"] == "resnet18"
    state = torch.load(workspace / "models/lenet/model.pt", weights_only=True)
    assert state["conv1.weight"].shape[1] == 1
    assert "layer4.1.bn2.running_mean" in state
    results = read_json(workspace / "metrics/evaluate.json")
    assert set(results) == {*SCORED, "paired", "paired_irradiated"}
    assert set(results["paired_irradiated"]) == set(results["paired"])
    assert results["baseline"] == before["baseline"]  # the baseline was not retrained
    n_test = len(pd.read_csv(workspace / "data/prepared/test.csv"))
    for scores in (results[model] for model in SCORED):
        assert set(scores) >= METRIC_KEYS
        assert scores["n_test"] == n_test
