"""stages.exp_summary on the `dvc exp show --json` of a real, tiny DVC project with queued seeds."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from bps.evaluation.experiments import experiments, spread, varied_params
from tests.support.dvc_project import PROJECT_ROOT, dvc, git, isolated_env

pytestmark = pytest.mark.slow

FAKE_TRAIN = """\
import json, pathlib, yaml
seed = yaml.safe_load(open("params.yaml"))["train"]["seed"]
pathlib.Path("metrics").mkdir(exist_ok=True)
json.dump({"lenet": {"accuracy": 0.6 + seed / 100, "protocol": "grouped by well",
                     "control": {"leakage": seed / 50}}}, open("metrics/evaluate.json", "w"))
"""


@pytest.fixture(scope="module")
def shown(tmp_path_factory) -> list[dict]:
    """`dvc exp show --json` after three queued experiments (seeds 1-3) ran."""
    base = tmp_path_factory.mktemp("exp-summary")
    env = isolated_env(base / "sandbox")
    repo = base / "repo"
    repo.mkdir()
    (repo / "train.py").write_text(FAKE_TRAIN)
    (repo / "params.yaml").write_text(yaml.safe_dump({"train": {"seed": 0, "lr": 0.001}}))
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": {
        "cmd": "python train.py", "deps": ["train.py"], "params": ["train"],
        "metrics": [{"metrics/evaluate.json": {"cache": False}}]}}}))
    git(repo, env, "init", "-q")
    dvc(repo, env, "init", "-q")
    dvc(repo, env, "repro")
    git(repo, env, "add", "-A")
    git(repo, env, "commit", "-q", "-m", "seed 0")
    dvc(repo, env, "exp", "run", "--queue", "-S", "train.seed=range(1,4)")  # the README's queued command
    dvc(repo, env, "exp", "run", "--run-all", "-j", "1")
    (base / "shown.json").write_text(dvc(repo, env, "exp", "show", "--json").stdout)
    return json.loads((base / "shown.json").read_text())


def test_every_queued_experiment_is_read_once_with_its_seed(shown):
    found = experiments(shown, "metrics/evaluate.json")
    assert sorted(e["params"]["train.seed"] for e in found) == [1, 2, 3]
    assert varied_params(found) == {"train.seed": [e["params"]["train.seed"] for e in found]}
    rows = {row["metric"]: row for row in spread(found)}
    assert set(rows) == {"lenet.accuracy", "lenet.control.leakage"}  # the protocol string is not a number
    assert rows["lenet.accuracy"]["n"] == 3
    assert rows["lenet.accuracy"]["mean"] == pytest.approx(0.62)
    assert rows["lenet.accuracy"]["sd"] == pytest.approx(0.01)  # SD of 0.61, 0.62, 0.63 with n − 1
    assert rows["lenet.control.leakage"]["mean"] == pytest.approx(0.04)


def test_the_script_prints_mean_and_sd(shown, tmp_path):
    saved = tmp_path / "shown.json"
    saved.write_text(json.dumps(shown))
    result = subprocess.run([sys.executable, "-m", "bps", "exp-summary", "--json", str(saved),
                             "--file", "metrics/evaluate.json", "--metrics", "accuracy"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert "3 experiments" in result.stdout and "train.seed" in result.stdout
    assert "lenet.accuracy" in result.stdout and "0.6200 ± 0.0100" in result.stdout
