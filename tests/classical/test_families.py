"""bps.classical.families and the train-appearance / train-foci stages (train-fusion runs end to end in
tests/e2e/test_pipeline_dvc.py): real fits on feature tables built
from simulated images, the negative control trained and scored on sham images only, and
probabilities in the target's class order."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bps.classical import families
from bps.classical.features import FAMILIES, family_columns, image_features
from bps.core.params import FeatureParams, parse_params
from bps.data.meta import with_groups
from bps.data.split import SPLITS, assign_splits
from bps.models import sklearn_io
from bps.models.card import mark_complete
from bps.models.loader import fusion_inputs, load_model
from bps.models.networks import LeNet5, save_checkpoint
from bps.sim.render import plan_dataset, simulate_image
from bps.targets.labels import get_target
from stages import train_classical
from tests.support.model_cards import finished_card

PER_CONDITION = 12


@pytest.fixture(scope="module")
def features_project(tmp_path_factory) -> Path:
    """data/features/{split}.csv of a small simulated dataset at 4 h, split by well."""
    root = tmp_path_factory.mktemp("classical")
    table = with_groups(plan_dataset(PER_CONDITION, [4], seed=0))
    split = assign_splits(table, "well", (0.6, 0.2, 0.2), seed=0)
    rows = [
        image_features(simulate_image(name, particle, dose, hours, seed=0), FeatureParams())
        for name, dose, particle, hours in table[["filename", "dose_Gy", "particle_type", "hr_post_exposure"]]
        .itertuples(index=False)
    ]
    full = pd.concat([table, pd.DataFrame(rows)], axis=1)
    (root / "data/features").mkdir(parents=True)
    for name in SPLITS:
        full[split == name].to_csv(root / "data/features" / f"{name}.csv", index=False)
    return root


@pytest.fixture(scope="module")
def trained_project(features_project) -> Path:
    """Both families and their controls trained once for the module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(features_project)
        params = parse_params({"task": {"target": "particle_dose"}, "appearance": {"max_iter": 20}})
        for family in FAMILIES:
            train_classical.main(params, family)
            for control in (False, True):
                mark_complete(families.model_folder(family, control))  # as run_training_stage does after main
    return features_project


@pytest.fixture
def trained(trained_project, monkeypatch) -> Path:
    """The trained project, as the working folder (the stages' paths are relative)."""
    monkeypatch.chdir(trained_project)
    return trained_project


@pytest.mark.parametrize("family", FAMILIES)
def test_predict_proba_covers_a_whole_split_in_class_order(trained, family):
    model = load_model(Path("models") / family)
    table = pd.read_csv("data/features/test.csv")
    proba = model.probabilities(table[family_columns(table, family)].to_numpy())
    target = get_target("particle_dose")
    assert proba.shape == (len(table), len(target.classes))
    assert table["filename"].tolist() == pd.read_csv("data/features/test.csv")["filename"].tolist()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert (proba.argmax(axis=1) != 0).any() or (target.encode(table) == 0).all()
    card = model.card
    assert card.classes == list(target.classes) and (card.kind, card.architecture) == ("classical", family)
    # Its stage does not depend on preprocess.*, so its card must not record them (dvc.lock would follow them).
    assert card.preprocess is None


@pytest.mark.parametrize("family", FAMILIES)
def test_negative_control_is_trained_and_scored_on_sham_images_only(trained, family):
    folder = families.model_folder(family, control=True)
    model, card = sklearn_io.load(folder), load_model(folder).card
    train = pd.read_csv("data/features/train.csv")
    n_sham = int((train["dose_Gy"] == 0).sum())
    assert 0 < n_sham < len(train)
    if family == "foci":
        assert model.steps[0][1].n_samples_seen_ == n_sham  # the scaler saw exactly the training sham images
    assert card.target == "particle" and card.classes == ["Fe", "X-ray"] and card.control
    rows = families.sham_rows(pd.read_csv("data/features/test.csv"))
    proba = load_model(folder).probabilities(rows[family_columns(rows, family)].to_numpy())
    assert len(rows) == int((pd.read_csv("data/features/test.csv")["dose_Gy"] == 0).sum())
    assert (rows["dose_Gy"] == 0).all()
    assert proba.shape == (len(rows), 2)


def test_training_logs_validation_and_control_scores_and_the_dose_response(trained):
    for family in FAMILIES:
        scores = json.loads((Path("metrics") / family / "metrics.json").read_text())
        assert {"val_accuracy", "val_loss", "val_macro_f1", "control_val_accuracy", "control_val_n"} <= set(scores)
        assert scores["control_val_n"] == int((pd.read_csv("data/features/val.csv")["dose_Gy"] == 0).sum())
    curves = {path.name: pd.read_csv(path) for path in Path("metrics/foci/dose_response").glob("*.csv")}
    assert set(curves) == {"Fe_4h.csv", "X-ray_4h.csv"}
    xray = curves["X-ray_4h.csv"]
    assert xray["dose_Gy"].tolist() == [0.0, 0.1, 1.0]
    assert xray["nuclei"].tolist() == [PER_CONDITION] * 3
    assert xray["foci_per_nucleus"].is_monotonic_increasing


def test_the_control_score_is_left_out_when_validation_holds_no_shams(trained):
    # split.val_unit: plate validates on irradiated plates only; dvclive refuses a metric without a value.
    control, target = sklearn_io.load(families.model_folder("foci", control=True)), get_target("particle")
    val = pd.read_csv("data/features/val.csv")
    assert families.control_scores(control, "foci", val[val["dose_Gy"] > 0], target) == {"control_val_n": 0}
    scores = families.control_scores(control, "foci", val, target)
    assert scores["control_val_n"] == int((val["dose_Gy"] == 0).sum()) > 0
    assert 0 <= scores["control_val_accuracy"] <= 1


def test_a_class_missing_from_training_is_one_clear_error(features_project):
    table = pd.read_csv(features_project / "data/features/train.csv")
    only_fe = table[table["particle_type"] == "Fe"]
    with pytest.raises(families.PipelineError, match=r"no training images of class\(es\) \['X-ray'\]"):
        families.fit("foci", parse_params({}), only_fe, get_target("particle"))


def test_a_fusion_model_reads_the_foci_features_then_its_own_copy_of_the_cnn(tmp_path):
    torch.manual_seed(0)
    network, rng = LeNet5(1, 2, 32).eval(), np.random.default_rng(0)
    save_checkpoint(tmp_path / "lenet", network, finished_card("lenet", 1, 32))
    images, foci = rng.integers(0, 256, (40, 1, 32, 32), dtype=np.uint8), rng.normal(size=(40, 8))
    inputs = fusion_inputs(load_model(tmp_path / "lenet", "cpu"), images, foci)
    assert inputs.shape == (40, 8 + 84) and np.array_equal(inputs[:, :8], foci)
    params, target = parse_params({}), get_target("particle")
    model = families.fit_inputs("fusion", params, inputs, np.arange(40) % 2, target)
    families.save(tmp_path / "fusion", model, "fusion", target, params, control=False, cnn=tmp_path / "lenet")
    mark_complete(tmp_path / "fusion")
    shutil.rmtree(tmp_path / "lenet")  # the folder stands alone
    loaded = load_model(tmp_path / "fusion", "cpu")
    assert (loaded.card.kind, loaded.card.architecture) == ("fusion", "fusion")
    np.testing.assert_allclose(loaded.probabilities((images, foci)), model.predict_proba(inputs))
