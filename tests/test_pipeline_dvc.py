"""End to end: the real `dvc` CLI reproduces the pipeline in a throwaway git repo of this project.

One project is built and reproduced once per session on a tiny configuration (48 simulated
images, 32×32, one epoch, 20 lr-find steps); tests that change it work on a copy. Everything
runs offline: the S3 source is a moto server on 127.0.0.1. ``test_dvc_remote.py`` reuses the
helpers below.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
import yaml
from s3_server import FAKE_KEY_ID, FAKE_SECRET, REGION, new_bucket, s3_client

from bps.sim.render import DEFLATE, plan_dataset, simulate_image
from bps.targets.labels import get_target

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
DVC = VENV_BIN / "dvc"
# In the order `dvc repro` runs them.
STAGES = (
    "check-params", "download", "split", "preprocess", "train-baseline", "train-lenet", "lr-find",
    "train-baseline-control", "train-lenet-control", "train-appearance", "train-foci", "evaluate",
)
SCORED = ("baseline", "lenet", "appearance", "foci")  # the models in metrics/evaluate.json, beside "paired"
METRIC_KEYS = {"accuracy", "balanced_accuracy", "macro_f1", "hamming_loss", "jaccard", "log_loss", "n_test"}
# Only what the project's pipeline needs from the source tree; the lock and metrics are rebuilt.
# The pipeline needs neither its tests nor its benchmarks (and the tests hold fake credentials that
# the remote test must not find in the project).
EXCLUDED = ("dvc.lock", "metrics/", "tests/", "benchmarks/")
TINY_PARAMS = {
    ("data", "synthetic", "images_per_condition"): 8,
    ("data", "hours"): [4],
    ("preprocess", "size"): 32,
    ("train", "epochs"): 1,
    ("baseline", "epochs"): 1,
    ("lr_find", "steps"): 20,
}
COMMAND_TIMEOUT_S = 300
RUNNING_STAGE = re.compile(r"Running stage '([^']+)'")


# ---------------------------------------------------------------- helpers (shared with test_dvc_remote)


def isolated_env(sandbox: Path, aws_credentials: bool = True) -> dict[str, str]:
    """The environment for `dvc`/`git` subprocesses: this venv first on PATH, nothing from ~.

    No AWS, DVC or git settings leak in from the machine (no ~/.aws, no global dvc or git
    config, no update check or analytics); ``aws_credentials`` adds the fake test credentials.
    """
    env = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "DVC_", "GIT_"))}
    dvc_global = sandbox / "dvc-global"
    dvc_global.mkdir(parents=True, exist_ok=True)
    (dvc_global / "config").write_text("[core]\n    check_update = false\n    analytics = false\n")
    (sandbox / "dvc-system").mkdir(exist_ok=True)
    (sandbox / "gitconfig").write_text("")
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        DVC_GLOBAL_CONFIG_DIR=str(dvc_global),
        DVC_SYSTEM_CONFIG_DIR=str(sandbox / "dvc-system"),
        DVC_SITE_CACHE_DIR=str(sandbox / "dvc-site-cache"),
        DVC_NO_ANALYTICS="1",
        DVC_STUDIO_OFFLINE="true",
        GIT_CONFIG_GLOBAL=str(sandbox / "gitconfig"),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="DVC Test",
        GIT_AUTHOR_EMAIL="dvc-test@example.invalid",
        GIT_COMMITTER_NAME="DVC Test",
        GIT_COMMITTER_EMAIL="dvc-test@example.invalid",
        AWS_SHARED_CREDENTIALS_FILE=str(sandbox / "no-aws-credentials"),
        AWS_CONFIG_FILE=str(sandbox / "no-aws-config"),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_DEFAULT_REGION=REGION,
        TQDM_DISABLE="1",
    )
    if aws_credentials:
        env.update(AWS_ACCESS_KEY_ID=FAKE_KEY_ID, AWS_SECRET_ACCESS_KEY=FAKE_SECRET)
    return env


def run(command: list[str], cwd: Path, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    """Run a command; on an unexpected failure, fail the test showing its whole output."""
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    if check and result.returncode != 0:
        pytest.fail(
            f"`{' '.join(command)}` exited {result.returncode} in {cwd}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


def dvc(repo: Path, env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([str(DVC), *args], repo, env, check)


def git(repo: Path, env: dict[str, str], *args: str) -> str:
    return run(["git", *args], repo, env).stdout


def output_of(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def stages_run(result: subprocess.CompletedProcess) -> list[str]:
    """The stages a `dvc repro` / `dvc exp run` actually executed, in order."""
    return RUNNING_STAGE.findall(output_of(result))


def source_files() -> list[str]:
    """The project's files as git knows them (working-tree versions), plus new code not yet added."""

    def listed(*args: str) -> list[str]:
        out = subprocess.run(["git", "ls-files", "-z", *args], cwd=PROJECT_ROOT, capture_output=True, check=True)
        return [name for name in out.stdout.decode().split("\0") if name]

    names = set(listed()) | set(listed("--others", "--exclude-standard", "--", "bps", "stages"))
    return sorted(
        name
        for name in names
        if (PROJECT_ROOT / name).is_file() and not any(name == ex or name.startswith(ex) for ex in EXCLUDED)
    )


def tiny_params() -> dict:
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    for keys, value in TINY_PARAMS.items():
        block = params
        for key in keys[:-1]:
            block = block[key]
        block[keys[-1]] = value
    return params


def make_project(dest: Path, env: dict[str, str]) -> Path:
    """A fresh git repo holding this project's sources and the tiny params.yaml, committed."""
    for name in source_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / name, target)
    (dest / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    git(dest, env, "init", "-q")
    git(dest, env, "add", "-A")
    git(dest, env, "commit", "-q", "-m", "Project sources, tiny params")
    return dest


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@dataclass(frozen=True)
class Reproduced:
    root: Path  # the reproduced, committed project: never modify it, copy it (copy_project)
    env: dict[str, str]
    sandbox: Path
    repro: subprocess.CompletedProcess  # the first `dvc repro`


_reproduced: list[Reproduced] = []


def reproduced_project(tmp_path_factory: pytest.TempPathFactory) -> Reproduced:
    """Build and `dvc repro` the tiny project once per session; commit the results."""
    if not _reproduced:
        base = tmp_path_factory.mktemp("dvc-pipeline")
        sandbox = base / "sandbox"
        sandbox.mkdir()
        env = isolated_env(sandbox)
        root = make_project(base / "project", env)
        repro = dvc(root, env, "repro")
        git(root, env, "add", "-A")
        git(root, env, "commit", "-q", "-m", "dvc repro on the tiny params")
        _reproduced.append(Reproduced(root, env, sandbox, repro))
    return _reproduced[0]


def copy_project(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest, symlinks=True)
    return dest


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
    assert stages_run(built.repro) == list(STAGES)

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
    assert set(results) == {*SCORED, "paired"}
    n_test = len(pd.read_csv(root / "data/prepared/test.csv"))
    n_sham = int((pd.read_csv(root / "data/prepared/test.csv")["dose_Gy"] == 0).sum())
    for model in SCORED:
        scores = results[model]
        assert scores["control"]["n_test"] == n_sham  # the negative control is scored on test shams only
        assert scores["accuracy_ci95_low"] <= scores["accuracy"] <= scores["accuracy_ci95_high"]
        assert set(scores) >= METRIC_KEYS, model
        assert scores["n_test"] == n_test
        assert 0.0 <= scores["accuracy"] <= 1.0
    for name in ("models/baseline/model.skops", "models/lenet/model.pt", "metrics/comparison.md",
                 "metrics/confusion/lenet.csv", "metrics/per_class/baseline.csv", "metrics/lr_find/curve.csv",
                 "metrics/lr_find/suggestion.json"):
        assert (root / name).is_file(), name

    again = dvc(root, built.env, "repro")
    assert stages_run(again) == []
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change" in output_of(again)
    assert "Data and pipelines are up to date" in output_of(again)
    status = dvc(root, built.env, "status")
    assert "Data and pipelines are up to date" in output_of(status)
    assert json.loads(dvc(root, built.env, "status", "--json").stdout) == {}


def test_exp_run_with_new_lr_reruns_only_training_and_evaluation(built, workspace):
    env = built.env
    before = read_json(workspace / "metrics/evaluate.json")

    result = dvc(workspace, env, "exp", "run", "-S", "train.lr=1.5e-4")

    assert sorted(stages_run(result)) == ["check-params", "evaluate", "train-lenet", "train-lenet-control"]
    params = json.loads(dvc(workspace, env, "params", "diff", "--json").stdout)
    assert params == {"params.yaml": {"train.lr": {"old": 0.0003, "new": 0.00015, "diff": pytest.approx(-0.00015)}}}
    metrics = json.loads(dvc(workspace, env, "metrics", "diff", "--json").stdout)
    assert "metrics/evaluate.json" in metrics
    changed = metrics["metrics/evaluate.json"]
    assert "lenet.log_loss" in changed
    assert not [key for key in changed if key.startswith("baseline.")]  # the baseline was not retrained
    after = read_json(workspace / "metrics/evaluate.json")
    assert after["baseline"] == before["baseline"]
    assert changed["lenet.log_loss"]["new"] == after["lenet"]["log_loss"]

    shown = json.loads(dvc(workspace, env, "exp", "show", "--json").stdout)
    experiments = [
        rev for commit in shown for exp in commit.get("experiments") or [] for rev in exp["revs"]
    ]
    assert len(experiments) == 1
    data = experiments[0]["data"]
    assert data["params"]["params.yaml"]["data"]["train"]["lr"] == 1.5e-4
    assert data["metrics"]["metrics/evaluate.json"]["data"] == after


def test_exp_run_with_new_size_reruns_from_preprocess(built, workspace):
    result = dvc(workspace, built.env, "exp", "run", "-S", "preprocess.size=28")

    # The run-cache already holds preprocess at size 32; DVC's run-cache key ignores keys named
    # `size` (treeverse/dvc#10296), so this also guards the `preprocess.size` line in dvc.yaml.
    assert "is cached" not in output_of(result)
    expected = ["check-params", "preprocess", "train-baseline", "train-lenet", "lr-find", "train-baseline-control",
                "train-lenet-control", "evaluate"]
    assert sorted(stages_run(result)) == sorted(expected)
    train_images = np.load(workspace / "data/prepared/train_images.npy")
    assert train_images.shape[1:] == (1, 28, 28)
    assert read_json(workspace / "models/lenet/model.json")["size"] == 28
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
    result = dvc(
        workspace,
        built.env,
        "exp", "run",
        "-S", "data.source=s3",
        "-S", f"data.s3.endpoint_url={source.endpoint_url}",
        "-S", f"data.s3.bucket={source.bucket}",
        "-S", "data.s3.workers=4",
    )

    assert stages_run(result) == list(STAGES)
    raw = workspace / "data/raw"
    meta = pd.read_csv(raw / "meta.csv")
    expected = source.table[source.table["hr_post_exposure"] == 4]
    assert sorted(meta["filename"]) == sorted(expected["filename"])
    assert {path.name for path in raw.iterdir()} == {*meta["filename"], "meta.csv", ".manifest.json"}
    for name in meta["filename"]:
        assert (raw / name).read_bytes() == source.tiffs[name], name

    results = read_json(workspace / "metrics/evaluate.json")
    n_test = len(pd.read_csv(workspace / "data/prepared/test.csv"))
    assert set(results) == {*SCORED, "paired"}
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

    assert sorted(stages_run(result)) == ["check-params", "evaluate", "lr-find", "train-lenet", "train-lenet-control"]
    assert read_json(workspace / "metrics/lr_find/suggestion.json")["model"] == "resnet18"
    info = read_json(workspace / "models/lenet/model.json")
    assert info["architecture"] == "resnet18"
    assert info["training"]["model"] == "resnet18"
    state = torch.load(workspace / "models/lenet/model.pt", weights_only=True)
    assert state["conv1.weight"].shape[1] == 1
    assert "layer4.1.bn2.running_mean" in state
    results = read_json(workspace / "metrics/evaluate.json")
    assert set(results) == {*SCORED, "paired"}
    assert results["baseline"] == before["baseline"]  # the baseline was not retrained
    n_test = len(pd.read_csv(workspace / "data/prepared/test.csv"))
    for scores in (results[model] for model in SCORED):
        assert set(scores) >= METRIC_KEYS
        assert scores["n_test"] == n_test
