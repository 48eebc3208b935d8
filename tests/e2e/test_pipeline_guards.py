"""No mistake loses outputs: real `dvc` in a throwaway copy of the reproduced tiny project.

A bad parameter anywhere in params.yaml fails in the first stage, before DVC deletes any other
stage's outputs; a valid edit re-runs only the stages that read it; a trainer whose `dvc` is
killed dies too, a second trainer of the same folder is refused naming the first, and the
unfinished model folder is refused by predict. The README's one restore command fixes the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest
import yaml

from bps.core.params import with_key
from tests.support.dvc_project import (
    DVC,
    dvc,
    git,
    output_of,
    run,
    stages_run,
)

pytestmark = pytest.mark.slow

# The README's one command after a failed stage (section "Reliability").
RESTORE = "git checkout HEAD -- params.yaml dvc.lock metrics && dvc checkout --force"


def fingerprint(root: Path, *folders: str) -> dict[str, str]:
    """Every file under ``folders`` with the hash of its bytes."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in folders
        for path in sorted((root / folder).rglob("*"))
        if path.is_file()
    }


def edit_params(root: Path, **values) -> None:
    """Set keys (``train__epochs=5`` for train.epochs, ``seed=1`` for the top-level seed) in params.yaml."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    for dotted, value in values.items():
        params = with_key(params, tuple(dotted.split("__")), value)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def assert_restored(root: Path, env: dict[str, str]) -> None:
    run(["sh", "-c", RESTORE], root, env)
    assert "Data and pipelines are up to date" in output_of(dvc(root, env, "status", "dvc.yaml"))
    assert git(root, env, "status", "--porcelain") == ""


def test_new_images_leave_the_cached_ones_intact(built, workspace):
    """Outputs are read-only hard links into DVC's cache (.dvc/config) and data/raw persists between
    runs: new images must replace the links, never write through them into the committed ones."""
    before = fingerprint(workspace, "data/raw")
    edit_params(workspace, seed=1)
    dvc(workspace, built.env, "repro", "-s", "download")
    assert fingerprint(workspace, "data/raw") != before
    image = next((workspace / "data/raw").glob("*.tif")).stat()
    assert image.st_nlink == 2 and not image.st_mode & 0o222  # linked into the cache, read-only
    assert_restored(workspace, built.env)
    assert fingerprint(workspace, "data/raw") == before


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("train.lr=-0.1", "train.lr: Input should be greater than 0"),
        ("task.target=dose",
         "task.target: Input should be 'particle', 'particle_dose', 'condition', 'particle+dose' or 'labels'"),
        ("preprocess.image_size=0", "preprocess.image_size: Input should be greater than or equal to 16"),
        ("split.train=0.9", "split: train + val + test must sum to 1"),
    ],
)
def test_a_bad_parameter_fails_before_any_output_is_removed(built, workspace, setting, message):
    env = built.env
    before = fingerprint(workspace, "models", "metrics", "data/prepared")

    result = dvc(workspace, env, "exp", "run", "-S", setting, check=False)

    assert result.returncode != 0
    output = output_of(result)
    assert f"error: params.yaml: {message}" in output
    assert "Traceback" not in output
    assert stages_run(result) == ["check-params"]
    assert fingerprint(workspace, "models", "metrics", "data/prepared") == before
    assert git(workspace, env, "status", "--porcelain", "--", "metrics", "dvc.lock") == ""
    assert_restored(workspace, env)


def test_a_top_level_typo_is_reported(built, workspace):
    env = built.env
    before = fingerprint(workspace, "models", "metrics")
    with open(workspace / "params.yaml", "a") as stream:
        stream.write("trian:\n  lr: 0.001\n")

    result = dvc(workspace, env, "repro", check=False)

    assert result.returncode != 0
    allowed = "seed, data, split, preprocess, task, baseline, train, "
    assert f"error: params.yaml: trian: unknown key (allowed: {allowed}" in output_of(result)
    assert stages_run(result) == ["check-params"]
    assert fingerprint(workspace, "models", "metrics") == before
    assert_restored(workspace, env)


def test_a_valid_edit_reruns_only_the_stages_that_read_it(built, workspace):
    env = built.env
    with open(workspace / "params.yaml", "a") as stream:
        stream.write("# a comment changes the file, not the parameters\n")

    result = dvc(workspace, env, "repro")

    # The check re-runs (it reads the whole file) and writes the same bytes: nothing else runs.
    assert stages_run(result) == ["check-params"]
    for stage in ("download", "split", "preprocess", "train-baseline", "train-lenet", "evaluate"):
        assert f"Stage '{stage}' didn't change" in output_of(result)

    # A speed setting lives in runtime.yaml, which no stage depends on: nothing re-runs.
    models = fingerprint(workspace, "models")
    (workspace / "runtime.yaml").write_text("preprocess:\n  workers: 1\n")
    assert stages_run(dvc(workspace, env, "repro")) == []
    assert fingerprint(workspace, "models") == models



TRAINERS = {"train-baseline", "train-baseline-control", "train-lenet", "train-lenet-control", "lr-find",
            "train-appearance"}


@pytest.mark.parametrize(("edit", "stages"), [
    ({"train__seed": 1}, {"check-params", *TRAINERS}),  # a seed sweep: same images, same split
    ({"seed": 1}, {"check-params", "download", "split", *TRAINERS, "evaluate"}),  # a new replicate of the study
])
def test_one_seed_scheme_changes_only_the_stages_it_seeds(built, workspace, edit, stages):
    """train.seed re-seeds every model's training and nothing else; the top-level seed the whole study
    (preprocess and the deterministic foci model read neither)."""
    edit_params(workspace, **edit)
    status = json.loads(dvc(workspace, built.env, "status", "dvc.yaml", "--json").stdout)
    assert set(status) == stages


def process_state(pid: int) -> str | None:
    """The kernel's one-letter state of ``pid`` (Z: a zombie), or None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def stop(repro: subprocess.Popen, log: IO[str], pid: int | None) -> None:
    """Whatever a test left running: close dvc's log, kill dvc and the stage process ``pid``."""
    log.close()
    if repro.poll() is None:
        repro.kill()
    if pid and process_state(pid) not in (None, "Z"):
        os.kill(pid, signal.SIGKILL)


def wait_for(condition, timeout_s: float, what: str, interval_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
# DVC runs a command through $SHELL -c: bash execs it, /bin/sh (dash, when SHELL is unset as in
# CI) stays between dvc and the trainer. One stage under each.
@pytest.mark.parametrize(("stage", "block", "folder", "shell"), [
    ("train-lenet", "train", "lenet", "/bin/sh"), ("train-baseline", "baseline", "baseline", "/bin/bash")])
def test_a_trainer_dies_with_dvc_and_is_never_run_twice(built, workspace, tmp_path, stage, block, folder, shell):
    env = {**built.env, "SHELL": shell}
    edit_params(workspace, **{f"{block}__epochs": 1_000_000})
    lock = workspace / "models" / f".{folder}.lock"
    log = open(tmp_path / "dvc.log", "w")  # noqa: SIM115 - closed below
    repro = subprocess.Popen([str(DVC), "repro", "-s", stage], cwd=workspace, env=env, stdout=log, stderr=log)
    trainer = None
    try:
        trainer = int(wait_for(lambda: lock.is_file() and lock.read_text().strip(), 120, "the trainer's lock"))

        second = run([sys.executable, "-m", f"stages.{stage.replace('-', '_')}"], workspace, env, check=False)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 1
        assert lines == [f"error: stage {stage} is already running as pid {trainer} "  # its stage lock comes first
                         f"(lock .locks/{stage}.lock); wait for it to finish or stop it"]

        repro.send_signal(signal.SIGKILL)  # only dvc: its trainer must not outlive it
        repro.wait(10)
        wait_for(lambda: process_state(trainer) in (None, "Z"), 20, f"trainer pid {trainer} to exit")

        image = next((workspace / "data/raw").glob("*.tif"))
        predicted = run([sys.executable, "-m", "bps", "predict", f"models/{folder}", str(image),
                         "--out", str(tmp_path / "p.csv")], workspace, env, check=False)
        assert predicted.returncode == 1
        assert len(predicted.stderr.strip().splitlines()) == 1, predicted.stderr
        assert f"models/{folder}" in predicted.stderr
        assert "did not finish" in predicted.stderr or "not a model folder" in predicted.stderr
        assert not (tmp_path / "p.csv").exists()
    finally:
        stop(repro, log, trainer)
    assert_restored(workspace, env)
    run([sys.executable, "-m", "bps", "predict", f"models/{folder}", str(image), "--out", str(tmp_path / "p.csv")],
        workspace, env)


def stage_outs(root: Path, stage: str) -> list[Path]:
    """The outs dvc.yaml declares for ``stage`` (DVC deletes them before the stage runs)."""
    outs = yaml.safe_load((root / "dvc.yaml").read_text())["stages"][stage]["outs"]
    return [root / (out if isinstance(out, str) else next(iter(out))) for out in outs]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("stage", ["preprocess", "evaluate"])
def test_every_stage_dies_with_dvc_and_is_never_run_twice(built, workspace, tmp_path, stage):
    """Not only the trainers: the stage is held (SIGSTOP) right after it locks, before it writes;
    a second run is refused; then dvc is killed and the stage let go: it must die, writing nothing."""
    env = {**built.env, "SHELL": "/bin/bash"}  # bash execs the stage: its parent is dvc itself
    lock = workspace / ".locks" / f"{stage}.lock"
    log = open(tmp_path / "dvc.log", "w")  # noqa: SIM115 - closed below
    repro = subprocess.Popen([str(DVC), "repro", "--force", "-s", stage], cwd=workspace, env=env, stdout=log,
                             stderr=log)
    pid = None
    try:
        pid = int(wait_for(lambda: lock.is_file() and lock.read_text().strip(), 120, f"{stage}'s lock", 0.01))
        os.kill(pid, signal.SIGSTOP)
        assert not any(out.exists() for out in stage_outs(workspace, stage))  # removed by dvc, not yet written

        second = run([sys.executable, "-m", f"stages.{stage}"], workspace, env, check=False)
        assert second.returncode == 1
        assert second.stderr.strip().splitlines() == [
            f"error: stage {stage} is already running as pid {pid} (lock .locks/{stage}.lock); "
            "wait for it to finish or stop it"]

        repro.send_signal(signal.SIGKILL)  # only dvc
        repro.wait(10)
        os.kill(pid, signal.SIGCONT)
        wait_for(lambda: process_state(pid) in (None, "Z"), 5, f"{stage} pid {pid} to exit")
        time.sleep(1)  # anything it had left to write would be written by now
        assert [out for out in stage_outs(workspace, stage) if out.exists()] == []
    finally:
        stop(repro, log, pid)
    assert_restored(workspace, env)
