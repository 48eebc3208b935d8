"""bps.core.stage: a stage runs only on the data sources of its pipeline, and says so in one line."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from bps.core.stage import BPS_SOURCES, LAYOUT_SOURCES, run_stage


def test_a_stage_runs_only_on_the_sources_of_its_pipeline(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["stages/features.py"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"data": {"source": "layout"}, "split": {"group_by": "none"}, "task": {"target": "labels"},
         "preprocess": {"scale": "fit"}}))
    ran = []
    run_stage(ran.append, LAYOUT_SOURCES)
    assert len(ran) == 1 and ran[0].task.target == "labels"
    with pytest.raises(SystemExit) as stopped:
        run_stage(ran.append, BPS_SOURCES)
    assert stopped.value.code == 1 and len(ran) == 1
    assert capsys.readouterr().err == (
        "error: data.source layout: features is a stage of dvc.yaml, not of datasets/dvc.yaml\n")


def test_a_held_stage_or_model_lock_refuses_a_second_holder_naming_the_first(tmp_path, monkeypatch):
    from bps.core.stage import StageLockedError, TrainingLockedError, stage_lock, training_lock

    monkeypatch.chdir(tmp_path)
    with stage_lock("features"), pytest.raises(StageLockedError) as stage, stage_lock("features"):
        pass
    with training_lock(Path("models/lenet")), pytest.raises(TrainingLockedError) as model, \
            training_lock(Path("models/lenet")):
        pass
    assert str(stage.value) == (f"stage features is already running as pid {os.getpid()} "
                                "(lock .locks/features.lock); wait for it to finish or stop it")
    assert str(model.value) == (f"models/lenet is being trained by pid {os.getpid()} (lock models/.lenet.lock); "
                                "wait for it to finish or stop it")
    with stage_lock("features"):  # released on exit
        pass
