"""End to end: a new split protocol re-runs split and every stage after it, and nothing else.

Uses the tiny reproduced project of test_pipeline_dvc.py (real `dvc` in a throwaway git repo).
"""

from __future__ import annotations

import pandas as pd
import pytest

from tests.support.dvc_project import (
    STAGES,
    dvc,
    read_json,
    stages_run,
)

pytestmark = pytest.mark.slow

AFTER_DOWNLOAD = sorted(stage for stage in STAGES if stage != "download")


def test_exp_run_with_another_protocol_reruns_split_and_everything_after_it(built, workspace):
    result = dvc(workspace, built.env, "exp", "run", "-S", "split.protocol=leave_wells_out")

    assert sorted(stages_run(result)) == AFTER_DOWNLOAD
    summary = read_json(workspace / "data/split/summary.json")
    assert summary["protocol"] == "leave_wells_out"
    assert summary["well_position_disjoint"] is True and summary["plate_disjoint"] is False
    for family in ("appearance", "foci"):
        assert (workspace / "models" / f"{family}-control" / "model.skops").is_file()
    features = pd.read_csv(workspace / "data/features/test.csv")
    assert features["filename"].tolist() == pd.read_csv(workspace / "data/split/test.csv")["filename"].tolist()


def test_a_held_out_hour_outside_the_data_is_refused_before_any_stage_runs(built, workspace):
    result = dvc(workspace, built.env, "exp", "run", "-S", "split.protocol=leave_hour_out", "-S",
                 "split.test_hour=48", check=False)

    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "split.test_hour (48) must be one of data.hours [4]" in output
    assert "Traceback" not in output
    assert stages_run(result) == ["check-params"]  # checked with the whole params.yaml, before any stage


def test_plate_validation_runs_every_stage_with_no_shams_in_val(built, workspace):
    result = dvc(workspace, built.env, "exp", "run", "-S", "data.hours=[4, 24]", "-S", "split.protocol=leave_hour_out",
                 "-S", "split.val_unit=plate")

    assert sorted(stages_run(result)) == sorted(STAGES)
    assert read_json(workspace / "data/split/summary.json")["val_unit"] == "plate"
    val = pd.read_csv(workspace / "data/split/val.csv")
    assert len(val) and (val["dose_Gy"] > 0).all()
    for family in ("appearance", "foci"):  # their control has no validation shams to be scored on
        scores = read_json(workspace / "metrics" / family / "metrics.json")
        assert scores["control_val_n"] == 0 and "control_val_accuracy" not in scores
    n_test = len(pd.read_csv(workspace / "data/split/test.csv"))
    assert read_json(workspace / "metrics/evaluate.json")["lenet"]["n_test"] == n_test
