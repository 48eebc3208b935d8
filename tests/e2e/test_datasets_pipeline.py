"""End to end: a dataset's own pipeline (datasets/dvc.yaml) in a real git + DVC repo."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.support.layouts import OWN, ROOT

LAYOUT_KEYS = {
    "hpa": ["sample_f1", "macro_f1", "micro_f1", "hamming_loss", "jaccard", "subset_accuracy", "micro_ap", "macro_ap"],
    "rxrx1": ["accuracy", "macro_f1", "top_5_accuracy"],
}


@pytest.mark.slow
@pytest.mark.parametrize(("dataset", "shape"), [("hpa", (84, 4, 32, 32)), ("rxrx1", (48, 6, 32, 32))])
def test_dvc_repro_runs_a_dataset_pipeline_beside_the_bps_one(tmp_path, dataset, shape):
    """The documented commands in a fresh git repo: the toy copy, then `dvc repro
    datasets/dvc.yaml:evaluate@<name>`: its stages run in its folder and nowhere else, the project's
    params.yaml is untouched, and evaluate scores both image models with intervals over the groups."""
    from tests.support.dvc_project import dvc, isolated_env, make_project, run, stages_run

    env = isolated_env(tmp_path / "sandbox")
    root = make_project(tmp_path / "project", env)
    folder = root / "datasets" / dataset
    own_params = (root / "params.yaml").read_text()
    run([sys.executable, "-m", "bps", "toy-data", dataset, f"datasets/{dataset}/fixture"], root, env)
    result = dvc(root, env, "repro", f"datasets/dvc.yaml:evaluate@{dataset}")
    pipeline = yaml.safe_load((ROOT / "datasets" / "dvc.yaml").read_text())["stages"]
    upstream_of_evaluate = set(pipeline) - {"lr-find"}  # the range test is its own target (lr-find@<name>)
    expected = sorted(f"datasets/dvc.yaml:{stage}@{dataset}" for stage in upstream_of_evaluate)
    assert sorted(stages_run(result)) == expected
    assert (root / "params.yaml").read_text() == own_params
    assert not (root / "data" / "raw").exists() and not (root / "models" / "lenet").exists()
    assert not list(root.rglob("NOT_APPLICABLE.md"))
    images = np.load(folder / "data" / "prepared" / "train_images.npy", mmap_mode="r")
    assert images.shape == shape
    classes = json.loads((folder / "data" / "split" / "summary.json").read_text())["classes"]
    results = json.loads((folder / "metrics" / "evaluate.json").read_text())
    assert sorted(results) == ["baseline", "lenet"]
    assert sorted(path.name for path in (folder / "models").iterdir() if path.is_dir()) == ["baseline", "lenet"]
    for name, scores in results.items():
        card = json.loads((folder / "models" / name / "model.json").read_text())
        assert card["in_channels"] == shape[1] and card["classes"] == classes
        assert card["multilabel"] is (dataset == "hpa")
        assert (card["thresholds"] is not None) is (dataset == "hpa")
        assert scores["protocol"] == f"grouped by {OWN[dataset]['split']['group_by']}"
        for key in LAYOUT_KEYS[dataset]:
            assert scores[key] is not None, (name, key)
        assert "macro_f1_ci95_low" in scores and scores["macro_f1_ci95_low"] <= scores["macro_f1"]
        per_class = pd.read_csv(folder / "metrics" / "per_class" / f"{name}.csv", dtype={"class": str})
        assert per_class["class"].tolist() == classes
    comparison = (folder / "metrics" / "comparison.md").read_text()
    assert "datasets/dvc.yaml" in comparison and "bootstrap replicates" in comparison
    assert dvc(root, env, "status", f"datasets/dvc.yaml:evaluate@{dataset}").stdout.strip().endswith("up to date.")
