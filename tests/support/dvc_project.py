"""The tiny project in a real git + DVC repo: building it, running dvc and git in it, reading results."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from bps.core.params import with_key
from tests.support.s3_server import FAKE_KEY_ID, FAKE_SECRET, REGION

PROJECT_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
DVC = VENV_BIN / "dvc"
# In the order `dvc repro` runs them.
STAGES = (
    "check-params", "download", "split", "preprocess", "train-baseline", "train-lenet", "lr-find",
    "train-baseline-control", "train-lenet-control", "train-appearance", "train-foci", "train-fusion", "evaluate",
)
SCORED = ("baseline", "lenet", "appearance", "foci", "hybrid", "fusion")  # metrics/evaluate.json; hybrid: the soft vote
METRIC_KEYS = {"accuracy", "balanced_accuracy", "macro_f1", "hamming_loss", "jaccard", "log_loss", "n_test"}
# Only what the project's pipeline needs from the source tree; the lock and metrics are rebuilt.
# The pipeline needs neither its tests nor its benchmarks (and the tests hold fake credentials that
# the remote test must not find in the project).
EXCLUDED = ("dvc.lock", "metrics/", "tests/", "benchmarks/")
TINY_PARAMS = {
    ("data", "synthetic", "images_per_condition"): 8,
    ("data", "hours"): [4],
    ("preprocess", "image_size"): 32,
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
        params = with_key(params, keys, value)
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


