"""The negative control is trained and scored on sham images only, and evaluate reports it."""

import json
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.metrics import balanced_accuracy_score

from bps.classical.features import FAMILIES
from bps.core.errors import PipelineError
from bps.core.params import SplitParams, parse_params
from bps.models.card import mark_complete, read_card
from bps.models.networks import PooledLeNet, load_checkpoint
from bps.targets.labels import EVEN_ODDS, get_target
from bps.training import negative_control
from bps.training.negative_control import (
    Fold,
    TrainingData,
    control_folds,
    control_requested,
    sham_pool,
    training_labels,
    training_runs,
)
from stages import evaluate, train_baseline, train_classical, train_fusion, train_lenet
from tests.support.dvc_project import SCORED

CONDITIONS = [("Fe", 0.0), ("Fe", 0.3), ("Fe", 0.82), ("X-ray", 0.0), ("X-ray", 0.1), ("X-ray", 1.0)]
SIZE = 16


def write_prepared(root, rng, hours: dict[str, tuple[int, ...]] | None = None) -> dict[str, pd.DataFrame]:
    """data/prepared/ for three splits: two wells per condition, hour and split (``hours``: the hours
    of each split, 4 h by default), irradiated images all 255 (so anything computed from them
    shows), sham images random; random classical features. A plate is a condition at an hour."""
    hours = hours or {"train": (4,), "val": (4,), "test": (4,)}
    tables = {}
    for split_index, split in enumerate(("train", "val", "test")):
        rows, images = [], []
        for plate, (particle, dose) in enumerate(CONDITIONS):
            for hour in hours[split]:
                for well in range(2):
                    for image in range(6):
                        well_name = f"P{plate}h{hour}-{'ABC'[split_index]}{well}"
                        rows.append({"filename": f"P{plate}h{hour}_1-{well_name[-2:]}_{image:03d}_001_proj.tif",
                                     "dose_Gy": dose, "particle_type": particle, "hr_post_exposure": hour,
                                     "plate": f"P{plate}h{hour}", "well": well_name,
                                     "field": f"{well_name}_{image:03d}"})
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


def train_every_model(params, root) -> None:
    """Every trainer and its control, as the pipeline runs them, then marked finished."""
    for trainer in (train_baseline, train_lenet):
        trainer.main(params)
        trainer.main(params, control=True)
    for family in FAMILIES:
        train_classical.main(params, family)
    mark_every_model_complete(root)  # as run_training_stage does once a trainer returns
    train_fusion.main(params)  # reads the finished CNN and its controls
    mark_every_model_complete(root)


def mark_every_model_complete(root) -> None:
    for folder in (root / "models").iterdir():
        if folder.is_dir():
            mark_complete(folder)


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tables = write_prepared(tmp_path, np.random.default_rng(0))
    params = parse_params({
        "preprocess": {"image_size": SIZE}, "task": {"target": "particle_dose"},
        "baseline": {"epochs": 2, "hidden_layers": [8]},
        "train": {"epochs": 1, "crop_pad": 2, "device": "cpu"},
        "evaluate": {"resamples": 200, "saliency_per_class": 1},
    })
    return tmp_path, tables, params


def test_sham_pool_keeps_dose_zero_rows_with_their_split_and_row():
    tables = {"train": pd.DataFrame({"dose_Gy": [0.0, 0.3, 0.0], "particle_type": ["Fe", "Fe", "X-ray"]}),
              "test": pd.DataFrame({"dose_Gy": [1.0, 0.0], "particle_type": ["X-ray", "Fe"]})}
    pool = sham_pool(tables)
    assert pool[["split", "row"]].values.tolist() == [["train", 0], ["train", 2], ["test", 1]]
    assert (pool["dose_Gy"] == 0).all()


def test_a_fold_without_both_particles_to_train_on_is_one_clear_error():
    pool = pd.DataFrame({"particle_type": ["Fe", "X-ray"], "split": ["train", "val"], "hr_post_exposure": [4, 4]})
    run = TrainingData("lenet-control", get_target("particle"), Fold())
    with pytest.raises(PipelineError, match=r"the train images of fold split include shams of \['Fe'\]"):
        run.rows(pool, "train")
    assert len(run.rows(pool, "val")) == 1  # validation only picks the epoch
    with pytest.raises(PipelineError, match="the val images of fold hour-4 include shams of no particle"):
        TrainingData("lenet-control", get_target("particle"), Fold(4)).rows(pool, "val")


@pytest.mark.parametrize("seed", range(30))
def test_hour_folds_hold_every_sham_out_exactly_once_and_never_train_on_its_hour(seed):
    rng = np.random.default_rng(seed)
    size, test_hour = rng.integers(1, 40), int(rng.choice([4, 24, 48]))
    pool = pd.DataFrame({"split": rng.choice(["train", "val", "test"], size),
                         "hr_post_exposure": rng.choice([4, 24, 48], size)})
    split = SplitParams(protocol="leave_hour_out", test_hour=test_hour)
    folds = control_folds(split, [4, 24, 48])
    assert [fold.held_out_hour for fold in folds][0] == test_hour  # the split's own fold first
    held = np.sum([fold.mask(pool, "held_out") for fold in folds], axis=0)
    assert held.tolist() == [1] * len(pool)
    for fold in folds:
        train, val, held_out = (fold.mask(pool, role) for role in ("train", "val", "held_out"))
        assert not (pool["hr_post_exposure"][train | val] == fold.held_out_hour).any()
        if val.any() and not (val & train).any():
            assert (train.astype(int) + val + held_out == 1).all()  # each row plays exactly one role
        else:  # no validation shams outside the held-out hour: the training ones validate
            assert (val == train).all() and (train ^ held_out).all()
    assert control_folds(SplitParams(), [4, 24, 48]) == [Fold()]


def test_control_flag_and_names():
    assert control_requested(["--control"]) is True
    assert control_requested([]) is False
    params = parse_params({"task": {"target": "condition"}})
    [control] = training_runs("lenet", params, control=True)
    assert (control.name, control.target.name, control.primary) == ("lenet-control", "particle", True)
    assert training_runs("lenet", params, control=False)[0].target.name == "condition"
    hour_out = parse_params({"split": {"protocol": "leave_hour_out", "test_hour": 48}})
    runs = training_runs("baseline", hour_out, control=True)
    assert [(run.name, run.primary) for run in runs] == [
        ("baseline-control", True), ("baseline-control/hour-4", False), ("baseline-control/hour-24", False)]


def test_a_stage_s_hour_folds_read_the_sham_images_once(monkeypatch):
    """Each fold trains its own model on its own shams, but the images come from one read for all."""
    reads = []
    monkeypatch.setattr(negative_control, "_image_pool", lambda: reads.append(1) or (np.zeros((0, 1, 4, 4)), None))
    runs = training_runs("lenet", parse_params({"split": {"protocol": "leave_hour_out"}}), control=True)
    assert len(runs) == 3 and not reads  # nothing is read before a fold needs it
    for run in runs:
        run.sham_images()
    assert len(reads) == 1


def test_train_shams_exclude_leaves_the_shams_out_of_the_model_s_splits_but_not_its_control_s(project):
    root, tables, _ = project
    params = parse_params({"train": {"shams": "exclude"}})
    (model,), (control, *_) = training_runs("lenet", params, False, "exclude"), training_runs("lenet", params, True)
    for role, split in (("train", "train"), ("val", "val")):
        images, table = model.load(role)
        irradiated = tables[split]["dose_Gy"] > 0
        assert table["filename"].tolist() == tables[split]["filename"][irradiated].tolist()
        assert (images == 255).all() and len(images) == irradiated.sum()  # write_prepared: irradiated pixels are 255
        assert (control.load(role)[1]["dose_Gy"] == 0).all()
    images, table = training_runs("lenet", params, False)[0].load("train")  # include: the whole split, mapped
    assert len(table) == len(tables["train"]) and isinstance(images, np.memmap)


def test_train_shams_uniform_trains_on_the_shams_at_even_odds_and_validates_without_them(project):
    root, tables, _ = project
    (model,) = training_runs("lenet", parse_params({"train": {"shams": "uniform"}}), False, "uniform")
    images, table = model.load("train")
    assert len(table) == len(tables["train"]) and isinstance(images, np.memmap)  # every training image, mapped
    labels, target = training_labels(model.target, table, "uniform"), model.target
    sham = (table["dose_Gy"] == 0).to_numpy()
    assert sham.any() and (labels[sham] == EVEN_ODDS).all()
    np.testing.assert_array_equal(labels[~sham], target.encode(table)[~sham])
    np.testing.assert_array_equal(training_labels(target, table), target.encode(table))  # include: their batch's
    irradiated = tables["val"]["dose_Gy"] > 0
    assert model.load("val")[1]["filename"].tolist() == tables["val"]["filename"][irradiated].tolist()


def test_train_adversary_trains_the_cnn_and_its_controls_and_keeps_the_network_alone(project):
    root, _, params = project
    params = params.model_copy(update={"train": params.train.model_copy(update={"adversary": 1.0})})
    train_lenet.main(params)
    train_lenet.main(params, control=True)
    mark_every_model_complete(root)
    for folder in (root / "models/lenet", root / "models/lenet-control"):
        network, card = load_checkpoint(folder)  # the plain default network: no plate head in the checkpoint
        assert type(network) is PooledLeNet and card.training["adversary"] == 1.0
    excluded = params.model_copy(update={"train": params.train.model_copy(update={"shams": "exclude"})})
    with pytest.raises(PipelineError, match="train.adversary: the training split has 0 sham plates"):
        train_lenet.main(excluded)


@pytest.mark.slow  # trains every model family and its control, then evaluates (~15 s)
def test_controls_train_on_training_shams_and_are_scored_on_test_shams(project):
    root, tables, params = project
    train_every_model(params, root)

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
    for model in SCORED:
        control = results[model]["control"]
        assert control["n_test"] == len(test_shams)
        assert control["n_test_groups"] == test_shams["well"].nunique()
        assert control["interval"] == "grouped bootstrap over test wells"
        assert control["leakage"] == pytest.approx(control["balanced_accuracy"] - 0.5, abs=1e-6)
        assert control["balanced_accuracy_ci95_low"] <= control["balanced_accuracy"] <= control[
            "balanced_accuracy_ci95_high"]
        assert results[model]["n_test"] == len(tables["test"])
        assert results[model]["protocol"] == "grouped by well"
    assert set(results["paired"]) == {f"{a}_vs_{b}" for a, b in combinations(SCORED, 2)}
    lenet, foci = (pd.read_csv(root / f"models/{name}-control/held_out.csv").set_index("filename")
                   for name in ("lenet", "foci"))
    mean = (lenet[["p_Fe", "p_X-ray"]] + foci.loc[lenet.index, ["p_Fe", "p_X-ray"]]) / 2  # the hybrid's control
    truth = (lenet["particle_type"] == "X-ray").to_numpy()
    assert results["hybrid"]["control"]["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(truth, mean.to_numpy().argmax(axis=1) == 1), abs=1e-6)
    test_irradiated = int((tables["test"]["dose_Gy"] > 0).sum())
    for key, pair in results["paired_irradiated"].items():  # the same pairs, counted on the irradiated images
        assert pair["only_first_right"] + pair["only_second_right"] <= test_irradiated, key
    assert set(results["paired_irradiated"]) == set(results["paired"])
    comparison = (root / "metrics/comparison.md").read_text()
    assert "negative control" in comparison and "McNemar" in comparison
    assert "## Model pairs on the irradiated nuclei alone" in comparison
    assert "fold by fold" not in comparison  # scored on the test split: no folds
    assert len(list((root / "metrics/saliency").glob("lenet_*.png"))) == 6  # one per particle_dose class
    by_hour = pd.read_csv(root / "metrics/accuracy_by_hour.csv")
    assert by_hour["images"].tolist() == [len(tables["test"])]


def test_under_leave_hour_out_the_controls_are_cross_validated_over_hours_and_scored_on_every_sham_plate(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tables = write_prepared(tmp_path, np.random.default_rng(1),
                            hours={"train": (4, 48), "val": (4, 48), "test": (24,)})
    params = parse_params({
        "preprocess": {"image_size": SIZE}, "split": {"protocol": "leave_hour_out", "test_hour": 24},
        "baseline": {"epochs": 2, "hidden_layers": [8]}, "train": {"epochs": 1, "crop_pad": 2, "device": "cpu"},
        "evaluate": {"resamples": 200, "saliency_per_class": 0},
    })
    train_every_model(params, tmp_path)

    shams = pd.concat([table[table["dose_Gy"] == 0] for table in tables.values()])
    for model in ("baseline", "lenet", *FAMILIES):
        folder = tmp_path / "models" / f"{model}-control"
        held_out = pd.read_csv(folder / "held_out.csv")
        assert sorted(held_out["filename"]) == sorted(shams["filename"])  # every sham scored, once
        assert (held_out["fold"] == held_out["hr_post_exposure"].map("hour-{}".format)).all()
        assert read_card(folder).control  # the split's own fold (24 h held out)
        for hour in (4, 48):
            assert read_card(folder / f"hour-{hour}").complete  # the other folds: finished models too

    evaluate.main(params)

    results = json.loads((tmp_path / "metrics/evaluate.json").read_text())
    for model in SCORED:
        control = results[model]["control"]
        assert (control["n_test"], control["n_folds"]) == (len(shams), 3)
        assert control["interval"] == "corrected t over 3 hour folds (Nadeau & Bengio 2003)"
        assert set(control["fold_balanced_accuracy"]) == {"hour-4", "hour-24", "hour-48"}
        assert results[model]["n_test"] == len(tables["test"])  # the models themselves: the test split only
    comparison = (tmp_path / "metrics/comparison.md").read_text()
    assert "cross-validated over hours" in comparison and "Negative controls, fold by fold" in comparison


def test_the_fusion_is_fitted_on_validation_or_on_training_when_validation_lacks_a_class(project, capsys):
    root, tables, params = project
    train_every_model(params, root)
    assert read_card(root / "models/fusion").training["fitted_on"] == "val"
    keep = (tables["val"]["particle_type"] == "Fe").to_numpy()  # a small dataset's validation split
    np.save(root / "data/prepared/val_images.npy", np.load(root / "data/prepared/val_images.npy")[keep])
    tables["val"][keep].to_csv(root / "data/prepared/val.csv", index=False)
    train_fusion.main(params)
    assert read_card(root / "models/fusion", require_complete=False).training["fitted_on"] == "train"
    assert "fusion: the validation images lack a class of particle_dose" in capsys.readouterr().out
