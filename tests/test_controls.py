"""The negative control is trained and scored on sham images only, and evaluate reports it."""

import json
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
import skops.io as sio

from bps.controls import control_requested, sham_only, training_data
from bps.errors import PipelineError
from bps.features import FAMILIES
from bps.model_card import mark_complete
from bps.params import parse_params
from stages import evaluate, train_baseline, train_classical, train_lenet

CONDITIONS = [("Fe", 0.0), ("Fe", 0.3), ("Fe", 0.82), ("X-ray", 0.0), ("X-ray", 0.1), ("X-ray", 1.0)]
SIZE = 16


def write_prepared(root, rng) -> dict[str, pd.DataFrame]:
    """data/prepared/ for three splits: two wells per condition and split, irradiated images all 255
    (so anything computed from them shows), sham images random; random classical features."""
    tables = {}
    for split_index, split in enumerate(("train", "val", "test")):
        rows, images = [], []
        for plate, (particle, dose) in enumerate(CONDITIONS):
            for well in range(2):
                for image in range(6):
                    well_name = f"P{plate}-{'ABC'[split_index]}{well}"
                    rows.append({"filename": f"P{plate}_1-{well_name[-2:]}_{image:03d}_001_proj.tif", "dose_Gy": dose,
                                 "particle_type": particle, "hr_post_exposure": 4, "plate": f"P{plate}",
                                 "well": well_name, "field": f"{well_name}_{image:03d}"})
                    pixels = rng.integers(0, 200, (1, SIZE, SIZE)) if dose == 0 else np.full((1, SIZE, SIZE), 255)
                    images.append(pixels.astype(np.uint8))
        folder = root / "data/prepared"
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"{split}_images.npy", np.stack(images))
        tables[split] = pd.DataFrame(rows)
        tables[split].to_csv(folder / f"{split}.csv", index=False)
        columns = ("appearance_background", "appearance_texture", "foci_count", "foci_peak")
        features = tables[split].assign(**{column: rng.normal(size=len(rows)) for column in columns})
        (root / "data/features").mkdir(parents=True, exist_ok=True)
        features.to_csv(root / "data/features" / f"{split}.csv", index=False)
    return tables


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tables = write_prepared(tmp_path, np.random.default_rng(0))
    params = parse_params({
        "preprocess": {"size": SIZE}, "task": {"target": "particle_dose"},
        "baseline": {"epochs": 2, "hidden_layers": [8]},
        "train": {"epochs": 1, "crop_pad": 2, "device": "cpu"},
        "evaluate": {"resamples": 200, "saliency_per_class": 1},
    })
    return tmp_path, tables, params


def test_sham_only_keeps_dose_zero_rows_and_their_images():
    table = pd.DataFrame({"dose_Gy": [0.0, 0.3, 0.0, 1.0], "particle_type": ["Fe", "Fe", "X-ray", "X-ray"]})
    images = np.arange(4, dtype=np.uint8).reshape(4, 1, 1, 1)
    kept_images, kept = sham_only(images, table, "train")
    assert kept["dose_Gy"].tolist() == [0.0, 0.0]
    assert kept_images.ravel().tolist() == [0, 2]


def test_sham_only_without_both_particles_is_one_clear_error():
    table = pd.DataFrame({"dose_Gy": [0.0, 0.3], "particle_type": ["Fe", "X-ray"]})
    with pytest.raises(PipelineError, match="the train split has sham images of \\['Fe'\\]"):
        sham_only(np.zeros((2, 1, 1, 1)), table, "train")
    assert len(sham_only(np.zeros((2, 1, 1, 1)), table, "val")[1]) == 1  # validation only picks the epoch
    with pytest.raises(PipelineError, match="the val split has sham images of no particle"):
        sham_only(np.zeros((1, 1, 1, 1)), table.iloc[1:], "val")


def test_control_flag_and_names():
    assert control_requested(["--control"]) is True
    assert control_requested([]) is False
    control = training_data("lenet", "condition", control=True)
    assert (control.name, control.target.name) == ("lenet-control", "particle")
    assert training_data("lenet", "condition", control=False).target.name == "condition"


def test_controls_train_on_training_shams_and_are_scored_on_test_shams(project):
    root, tables, params = project
    for trainer in (train_baseline, train_lenet):
        trainer.main(params)
        trainer.main(params, control=True)
    for family in FAMILIES:
        train_classical.main(params, family)
    for folder in (root / "models").iterdir():
        mark_complete(folder)  # as run_training_stage does once a trainer returns

    sham_train = tables["train"]["dose_Gy"] == 0
    scaler = sio.load(root / "models/baseline-control/model.skops",
                      trusted=sio.get_untrusted_types(file=root / "models/baseline-control/model.skops")).steps[0][1]
    train_images = np.load(root / "data/prepared/train_images.npy")
    assert scaler.n_samples_seen_ == sham_train.sum()  # irradiated (all-255) images would move both
    np.testing.assert_allclose(scaler.mean_, train_images[sham_train.to_numpy()].reshape(sham_train.sum(), -1).mean(0)
                               / 255.0, rtol=1e-5)
    for name in ("baseline-control", "lenet-control"):
        info = json.loads((root / "models" / name / "model.json").read_text())
        assert (info["target"], info["classes"], info["control"]) == ("particle", ["Fe", "X-ray"], True)
    assert json.loads((root / "models/lenet/model.json").read_text())["target"] == "particle_dose"

    evaluate.main(params)

    results = json.loads((root / "metrics/evaluate.json").read_text())
    test_shams = tables["test"][tables["test"]["dose_Gy"] == 0]
    for model in ("baseline", "lenet", *FAMILIES):
        control = results[model]["control"]
        assert control["n_test"] == len(test_shams)
        assert control["n_test_groups"] == test_shams["well"].nunique()
        assert control["leakage"] == pytest.approx(control["balanced_accuracy"] - 0.5, abs=1e-6)
        assert control["balanced_accuracy_ci95_low"] <= control["balanced_accuracy"] <= control[
            "balanced_accuracy_ci95_high"]
        assert results[model]["n_test"] == len(tables["test"])
        assert results[model]["protocol"] == "grouped by well"
    assert set(results["paired"]) == {f"{a}_vs_{b}" for a, b in combinations(("baseline", "lenet", *FAMILIES), 2)}
    comparison = (root / "metrics/comparison.md").read_text()
    assert "negative control" in comparison and "McNemar" in comparison
    assert len(list((root / "metrics/saliency").glob("lenet_*.png"))) == 6  # one per particle_dose class
    by_hour = pd.read_csv(root / "metrics/accuracy_by_hour.csv")
    assert by_hour["images"].tolist() == [len(tables["test"])]
