"""bps.targets.labels: the two-head target ``particle+dose`` (labels, loss, per-head metrics, training,
prediction, dvc) and a layout's own labels as a target.

Also checks, on hand examples and random predictions, what Hamming loss and Jaccard reduce to
for each target (the README states these reductions).
"""

import json
import math

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bps.core.params import BaselineParams, PreprocessParams, TrainParams, parse_params
from bps.evaluation.intervals import GroupedBootstrap
from bps.evaluation.saliency import input_gradients
from bps.evaluation.scores import model_scores
from bps.models import pixel_mlp, sklearn_io
from bps.models.inference import head_softmax, predict_proba, to_float
from bps.models.networks import LeNet5, save_checkpoint
from bps.serving.app import ModelService
from bps.serving.predictor import Predictor
from bps.sim.render import DEFLATE, simulate_image
from bps.targets.labels import EVEN_ODDS, get_target, layout_target, task_target
from bps.targets.metrics import HEAD_KEYS, head_scores, summary, validation_scores
from bps.training.loop import head_loss, make_deterministic, make_optimizer, train_epoch
from tests.support.dvc_project import SCORED, copy_project, dvc, read_json, reproduced_project, stages_run
from tests.support.model_cards import finished_card

CPU = torch.device("cpu")
TWO_HEADS = get_target("particle+dose")
OUTPUTS = ["Fe", "X-ray", "sham", "low", "high"]
# (particle, dose level) → the joint class name.
JOINT = {("Fe", "sham"): "Fe 0 Gy", ("Fe", "low"): "Fe 0.3 Gy", ("Fe", "high"): "Fe 0.82 Gy",
         ("X-ray", "sham"): "X-ray 0 Gy", ("X-ray", "low"): "X-ray 0.1 Gy", ("X-ray", "high"): "X-ray 1 Gy"}
# One image of every (particle, dose) pair, in the study's order.
HAND = pd.DataFrame(
    {"particle_type": ["Fe", "Fe", "Fe", "X-ray", "X-ray", "X-ray"], "dose_Gy": [0.0, 0.3, 0.82, 0.0, 0.1, 1.0]}
)


# --- the target ------------------------------------------------------------------------------


def test_two_head_target_labels_and_outputs():
    assert parse_params({"task": {"target": "particle+dose"}}).task.target == "particle+dose"
    assert [head.name for head in TWO_HEADS.heads] == ["particle", "dose"]
    assert TWO_HEADS.head_sizes == (2, 3)
    assert list(TWO_HEADS.outputs) == OUTPUTS
    # Labels: one joint index per image, the particle_dose classes, particle-major.
    assert TWO_HEADS.classes == get_target("particle_dose").classes
    labels = TWO_HEADS.encode(HAND)
    assert labels.tolist() == [0, 1, 2, 3, 4, 5]
    particle, dose = TWO_HEADS.head_labels(labels)
    assert particle.tolist() == [0, 0, 0, 1, 1, 1]
    assert dose.tolist() == [0, 1, 2, 0, 1, 2]


def test_one_head_targets_are_their_own_head():
    for name in ("particle", "particle_dose", "condition"):
        target = get_target(name)
        assert target.heads == (target,)
        assert target.outputs == target.classes
        proba = np.random.default_rng(0).dirichlet(np.ones(len(target.classes)), 7)
        assert target.predict(proba).tolist() == proba.argmax(axis=1).tolist()
        assert target.marginals(proba) is proba


def test_predict_takes_each_heads_argmax():
    proba = np.array(
        [
            [0.6, 0.4, 0.1, 0.2, 0.7],  # Fe, high → Fe 0.82 Gy
            [0.3, 0.7, 0.5, 0.3, 0.2],  # X-ray, sham → X-ray 0 Gy
        ]
    )
    assert [TWO_HEADS.classes[i] for i in TWO_HEADS.predict(proba)] == ["Fe 0.82 Gy", "X-ray 0 Gy"]


def test_marginals_of_joint_probabilities():
    # Joint over (Fe 0, Fe 0.3, Fe 0.82, X-ray 0, X-ray 0.1, X-ray 1).
    joint = np.array([[0.1, 0.2, 0.3, 0.0, 0.25, 0.15]])
    np.testing.assert_allclose(TWO_HEADS.marginals(joint), [[0.6, 0.4, 0.1, 0.45, 0.45]])


# --- loss and probabilities ------------------------------------------------------------------


def test_head_loss_is_the_sum_of_per_head_cross_entropies():
    logits = torch.tensor([[2.0, 0.0, 1.0, 0.0, -1.0], [0.0, 1.0, 0.0, 3.0, 0.0]])
    labels = torch.tensor([2, 3])  # Fe 0.82 Gy (Fe, high), X-ray 0 Gy (X-ray, sham)
    # By hand: -log softmax of the true entry in each head's slice.
    row0 = -(2 - math.log(math.exp(2) + 1)) - (-1 - math.log(math.e + 1 + math.exp(-1)))
    row1 = -(1 - math.log(1 + math.e)) - (0 - math.log(1 + math.exp(3) + 1))
    assert head_loss(logits, labels, (2, 3)).item() == pytest.approx(row0 + row1, rel=1e-6)
    # Weights per joint class scale each image's whole loss.
    weights = torch.tensor([1.0, 1.0, 2.0, 0.5, 1.0, 1.0])
    assert head_loss(logits, labels, (2, 3), weights).item() == pytest.approx(2 * row0 + 0.5 * row1, rel=1e-6)
    # The gradient flows into both heads.
    logits.requires_grad_(True)
    head_loss(logits, labels, (2, 3)).backward()
    assert (logits.grad.abs().sum(dim=0) > 0).all()


def test_head_loss_with_one_head_is_plain_cross_entropy():
    logits, labels = torch.randn(6, 3, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 2, 1, 0])
    weights = torch.tensor([1.0, 2.0, 0.5])
    for sizes in ((), (3,)):
        expected = torch.nn.CrossEntropyLoss(weight=weights, reduction="sum")(logits, labels)
        assert torch.equal(head_loss(logits, labels, sizes, weights), expected)


def test_an_even_odds_label_is_cross_entropy_against_equal_odds():
    logits = torch.tensor([[2.0, 0.0], [1.0, -1.0], [0.5, 3.0]], requires_grad=True)
    labels = torch.tensor([0, EVEN_ODDS, 1])
    named = torch.nn.CrossEntropyLoss(reduction="sum")(logits[[0, 2]], labels[[0, 2]])
    even = -torch.log_softmax(logits[1], dim=0).mean()
    loss = head_loss(logits, labels)
    assert loss.item() == pytest.approx((named + even).item(), rel=1e-6)
    loss.backward()
    assert logits.grad[1, 0] > 0 > logits.grad[1, 1]  # it pulls the image's two logits together...
    assert head_loss(torch.zeros(1, 2), torch.tensor([EVEN_ODDS])).item() == pytest.approx(math.log(2))  # ...to here


def test_head_softmax_normalises_each_slice():
    logits = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    proba = head_softmax(logits, (2, 3))
    torch.testing.assert_close(proba[:, :2].sum(dim=1), torch.ones(4))
    torch.testing.assert_close(proba[:, 2:].sum(dim=1), torch.ones(4))
    torch.testing.assert_close(proba[:, 2:], torch.softmax(logits[:, 2:], dim=1))
    assert torch.equal(head_softmax(logits), torch.softmax(logits, dim=1))


# --- per-head metrics on a hand example --------------------------------------------------------

# Four images: Fe 0 Gy (sham), Fe 0.82 Gy, X-ray 0.1 Gy, X-ray 1 Gy.
Y_TRUE = np.array([0, 2, 4, 5])
PROBA = np.array(
    [
        [0.8, 0.2, 0.5, 0.3, 0.2],  # Fe, sham: both right
        [0.4, 0.6, 0.2, 0.2, 0.6],  # X-ray, high: particle wrong, dose right
        [0.1, 0.9, 0.1, 0.5, 0.4],  # X-ray, low: both right
        [0.7, 0.3, 0.6, 0.3, 0.1],  # Fe, sham: both wrong
    ]
)
IS_SHAM = np.array([True, False, False, False])


def test_per_head_scores_by_hand():
    result = summary(TWO_HEADS, Y_TRUE, PROBA, IS_SHAM)
    assert result["particle_accuracy"] == pytest.approx(2 / 4)
    assert result["dose_accuracy"] == pytest.approx(3 / 4)
    assert result["accuracy"] == pytest.approx(2 / 4)  # both heads right
    # Particle recall: Fe 1/2, X-ray 1/2; dose recall: sham 1, low 1, high 1/2.
    assert result["particle_balanced_accuracy"] == pytest.approx(0.5)
    assert result["dose_balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3, abs=1e-6)
    # Dose F1: sham 2/3 (1 of 2 predicted), low 1, high 2/3.
    assert result["dose_macro_f1"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3, abs=1e-6)
    assert result["particle_sham_accuracy"] == 1.0 and result["dose_sham_accuracy"] == 1.0
    assert result["particle_irradiated_accuracy"] == pytest.approx(1 / 3, abs=1e-6)
    particle_loss = -(math.log(0.8) + math.log(0.4) + math.log(0.9) + math.log(0.3)) / 4
    dose_loss = -(math.log(0.5) + math.log(0.6) + math.log(0.5) + math.log(0.1)) / 4
    assert result["particle_log_loss"] == pytest.approx(particle_loss, abs=1e-6)
    assert result["dose_log_loss"] == pytest.approx(dose_loss, abs=1e-6)
    assert result["log_loss"] == pytest.approx(particle_loss + dose_loss, abs=1e-5)
    # Bits wrong: 0, 2, 0, 4 of 5 columns; Jaccard per row 1, 1/3, 1, 0.
    assert result["hamming_loss"] == pytest.approx(6 / 20, abs=1e-6)
    assert result["jaccard"] == pytest.approx((2 + 1 / 3) / 4, abs=1e-6)
    assert validation_scores(TWO_HEADS, Y_TRUE, PROBA)["val_loss"] == result["log_loss"]


def test_one_head_targets_have_no_head_keys():
    proba = np.eye(2)[[0, 1, 1]]
    assert head_scores(get_target("particle"), np.array([0, 1, 0]), proba, np.zeros(3, dtype=bool)) == {}
    assert not [key for key in summary(get_target("particle"), np.array([0, 1, 0]), proba, np.zeros(3, bool))
                if key.startswith(("particle_", "dose_"))]


# --- what Hamming loss and Jaccard reduce to, per target (stated in the README) -----------------


def _random_case(target_name: str, seed: int, count: int = 500) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = get_target(target_name)
    y_true = rng.integers(0, len(target.classes), count)
    noise = rng.random(count)
    y_pred = np.where(noise < 0.4, y_true, rng.integers(0, len(target.classes), count))
    return y_true, y_pred


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_particle_hamming_is_error_rate_and_jaccard_is_accuracy(seed):
    target = get_target("particle")
    y_true, y_pred = _random_case("particle", seed)
    result = summary(target, y_true, np.eye(2)[y_pred], np.zeros(len(y_true), bool))
    assert result["hamming_loss"] == pytest.approx(1 - result["accuracy"], abs=1e-6)
    assert result["jaccard"] == pytest.approx(result["accuracy"], abs=1e-6)


@pytest.mark.parametrize("target_name", ["particle_dose", "particle+dose"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_particle_and_dose_hamming_and_jaccard_from_the_two_error_rates(target_name, seed):
    target = get_target(target_name)
    y_true, y_pred = _random_case(target_name, seed)
    proba = np.eye(len(target.outputs))[y_pred] if target_name == "particle_dose" else _head_one_hot(y_pred)
    result = summary(target, y_true, proba, np.zeros(len(y_true), bool))
    particle_wrong, dose_wrong = (t != p for t, p in zip(TWO_HEADS.head_labels(y_true), TWO_HEADS.head_labels(y_pred)))
    # Hamming = 2/5 (particle error + dose-level error); Jaccard = both right + 1/3 exactly one wrong.
    assert result["hamming_loss"] == pytest.approx(0.4 * (particle_wrong.mean() + dose_wrong.mean()), abs=1e-6)
    one_wrong = (particle_wrong ^ dose_wrong).mean()
    assert result["jaccard"] == pytest.approx(result["accuracy"] + one_wrong / 3, abs=1e-6)


def test_condition_hamming_and_jaccard_weigh_error_kinds():
    target = get_target("condition")  # sham, Fe 0.3, Fe 0.82, X-ray 0.1, X-ray 1
    y_true = np.array([0, 1, 1, 1, 1])
    y_pred = np.array([1, 0, 2, 3, 4])  # sham↔irradiated ×2, level wrong, particle wrong, both wrong
    result = summary(target, y_true, np.eye(5)[y_pred], np.zeros(5, bool))
    assert result["hamming_loss"] == pytest.approx((3 + 3 + 2 + 2 + 4) / 25, abs=1e-6)
    assert result["jaccard"] == pytest.approx((0 + 0 + 1 / 3 + 1 / 3 + 0) / 5, abs=1e-6)


def _head_one_hot(joint: np.ndarray) -> np.ndarray:
    particle, dose = TWO_HEADS.head_labels(joint)
    return np.concatenate([np.eye(2)[particle], np.eye(3)[dose]], axis=1)


# --- training and prediction -----------------------------------------------------------------


@pytest.mark.slow  # trains a LeNet to convergence (~15 s)
def test_lenet_learns_both_heads():
    make_deterministic(0)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, 96)
    particle, dose = TWO_HEADS.head_labels(labels)
    images = np.full((96, 1, 16, 16), 40, dtype=np.uint8)
    images[:, :, :8] += (100 * particle).astype(np.uint8)[:, None, None, None]  # particle: top half
    images[:, :, 8:] += (60 * dose).astype(np.uint8)[:, None, None, None]  # dose level: bottom half
    model = LeNet5(1, len(TWO_HEADS.outputs), 16)
    optimizer = make_optimizer(model, TrainParams(lr=1e-2))
    losses = [
        train_epoch(model, optimizer, images, labels, 16, torch.Generator().manual_seed(0), None, CPU,
                    head_sizes=TWO_HEADS.head_sizes)
        for _ in range(10)
    ]
    # Untrained, the loss is near ln 2 + ln 3, the sum over the two heads.
    assert abs(losses[0] - math.log(6)) < 0.5
    assert losses[-1] < 0.5 * losses[0]
    proba = predict_proba(model, images, CPU, TWO_HEADS.head_sizes)
    assert proba.shape == (96, 5)
    np.testing.assert_allclose(TWO_HEADS.split(proba)[1].sum(axis=1), 1.0, atol=1e-5)
    result = summary(TWO_HEADS, labels, proba, np.zeros(96, bool))
    assert result["particle_accuracy"] > 0.9 and result["dose_accuracy"] > 0.9


STORED = PreprocessParams(image_size=32, normalize="percentile")


@pytest.fixture(scope="module")
def two_head_lenet(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / "lenet"
    card = finished_card("lenet", size=STORED.image_size, classes=TWO_HEADS.outputs, preprocess=STORED,
                         target="particle+dose")
    save_checkpoint(folder, LeNet5(1, 5, STORED.image_size), card)
    return folder


@pytest.fixture(scope="module")
def two_head_baseline(tmp_path_factory):
    """The MLP as train-baseline fits it for particle+dose: on the six joint classes."""
    rng = np.random.default_rng(0)
    flat = pixel_mlp.flatten(rng.integers(0, 256, (60, 1, STORED.image_size, STORED.image_size), dtype=np.uint8))
    scaler = StandardScaler().fit(flat)
    mlp = pixel_mlp.make_mlp(BaselineParams(hidden_layers=[8], lr=1e-2, batch_size=16))
    pixel_mlp.fit_epoch(mlp, scaler.transform(flat), rng.integers(0, 6, 60), np.arange(6))
    folder = tmp_path_factory.mktemp("models") / "baseline"
    card = finished_card("mlp", size=STORED.image_size, classes=TWO_HEADS.outputs, preprocess=STORED,
                         target="particle+dose")
    sklearn_io.save(folder, make_pipeline(scaler, mlp), card)
    return folder


def _images(count: int = 6) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (count, 1, STORED.image_size, STORED.image_size), dtype=np.uint8)


@pytest.mark.parametrize("folder_fixture", ["two_head_lenet", "two_head_baseline"])
def test_predict_table_has_each_heads_prediction(folder_fixture, request):
    predictor = Predictor(request.getfixturevalue(folder_fixture))
    proba = predictor.predict_proba(_images())
    assert proba.shape == (6, 5)
    for block in TWO_HEADS.split(proba):
        np.testing.assert_allclose(block.sum(axis=1), 1.0, atol=1e-5)
    table = predictor.table([f"{i}.tif" for i in range(6)], proba)
    assert list(table.columns) == ["file", "predicted", "predicted_particle", "predicted_dose",
                                   *[f"p_{name}" for name in OUTPUTS]]
    particle = np.array(["Fe", "X-ray"])[proba[:, :2].argmax(axis=1)]
    dose = np.array(["sham", "low", "high"])[proba[:, 2:].argmax(axis=1)]
    assert table["predicted_particle"].tolist() == particle.tolist()
    assert table["predicted_dose"].tolist() == dose.tolist()
    assert table["predicted"].tolist() == [JOINT[p, d] for p, d in zip(particle, dose)]


def test_baseline_two_head_probabilities_are_the_joint_marginals(two_head_baseline):
    images = _images()
    joint = sklearn_io.load(two_head_baseline).predict_proba(pixel_mlp.flatten(images))
    assert joint.shape == (6, 6)
    got = Predictor(two_head_baseline).predict_proba(images)
    np.testing.assert_allclose(got[:, 0], joint[:, :3].sum(axis=1))  # P(Fe)
    np.testing.assert_allclose(got[:, 3], joint[:, [1, 4]].sum(axis=1))  # P(low)


def test_service_answers_the_joint_class_and_per_output_probabilities(two_head_lenet, tmp_path):
    name = "P242_73665006707-A6_002_001_proj.tif"
    tifffile.imwrite(tmp_path / "a.tif", simulate_image(name, "Fe", 0.82, 4, seed=1), compression=DEFLATE)
    service = ModelService(Predictor(two_head_lenet), max_image_side=1024)
    with open(tmp_path / "a.tif", "rb") as upload:
        (prediction,) = service.predict([("a.tif", upload)]).predictions
    assert list(prediction.probabilities) == OUTPUTS
    p = prediction.probabilities
    assert prediction.predicted == JOINT[max(("Fe", "X-ray"), key=p.get), max(("sham", "low", "high"), key=p.get)]


def test_each_heads_scores_carry_bootstrap_intervals():
    rng = np.random.default_rng(5)
    n, wells = 240, 24
    y_true = rng.integers(0, len(TWO_HEADS.classes), n)
    blocks = []
    for size, truth in zip(TWO_HEADS.head_sizes, TWO_HEADS.head_labels(y_true), strict=True):
        block = rng.dirichlet(np.ones(size), n)
        block[np.arange(n), truth] += rng.random(n)  # better than chance
        blocks.append(block / block.sum(axis=1, keepdims=True))
    outputs, sham = np.concatenate(blocks, axis=1), TWO_HEADS.head_labels(y_true)[1] == 0
    wells_of = np.unique(rng.integers(0, wells, n), return_inverse=True)[1]
    keys = [f"{head}_{key}" for head in ("particle", "dose") for key in HEAD_KEYS]

    # One replicate that draws every well once is the sample itself: its interval is the value.
    itself = GroupedBootstrap(wells_of, np.ones((1, wells_of.max() + 1), dtype=np.int64))
    scores = model_scores(TWO_HEADS, y_true, outputs, sham, itself, calibration_bins=10)
    for key in keys:
        assert scores[f"{key}_ci95_low"] == pytest.approx(scores[key], abs=1e-6) == scores[f"{key}_ci95_high"], key

    resampled = GroupedBootstrap.draw(wells_of, np.zeros(n), 500, seed=0)
    scores = model_scores(TWO_HEADS, y_true, outputs, sham, resampled, calibration_bins=10)
    for key in keys:
        assert scores[f"{key}_ci95_low"] < scores[f"{key}_ci95_high"], key


def test_saliency_of_two_heads_is_the_gradient_of_the_predicted_joint_class():
    torch.manual_seed(0)
    model = LeNet5(1, len(TWO_HEADS.outputs), 16)
    images = np.random.default_rng(0).integers(0, 256, (3, 1, 16, 16), dtype=np.uint8)

    saliency, outputs = input_gradients(model, images, torch.device("cpu"), TWO_HEADS.head_sizes)

    for block in TWO_HEADS.split(outputs):
        np.testing.assert_allclose(block.sum(axis=1), 1, rtol=1e-5)  # each head's own softmax
    inputs = to_float(images).requires_grad_(True)
    probabilities = head_softmax(model(inputs), TWO_HEADS.head_sizes)
    predicted = TWO_HEADS.predict(outputs)
    np.testing.assert_array_equal(predicted, TWO_HEADS.joint(probabilities.detach().numpy()).argmax(axis=1))
    # the same map by hand: d log(p_particle · p_dose of the predicted pair) / d pixel
    particle, dose = TWO_HEADS.head_labels(predicted)
    rows = torch.arange(len(images))
    chosen = (probabilities[rows, torch.as_tensor(particle)].log()
              + probabilities[rows, 2 + torch.as_tensor(dose)].log()).sum()
    (gradient,) = torch.autograd.grad(chosen, inputs)
    np.testing.assert_allclose(saliency, gradient.abs().amax(dim=1).numpy(), rtol=1e-4, atol=1e-7)


# --- the real pipeline -----------------------------------------------------------------------


@pytest.mark.slow
def test_dvc_exp_run_two_heads_reports_both(tmp_path_factory, tmp_path):
    built = reproduced_project(tmp_path_factory)
    workspace = copy_project(built.root, tmp_path / "project")

    result = dvc(workspace, built.env, "exp", "run", "-S", "task.target=particle+dose")

    # Every stage that reads `task`, after the params check.
    assert sorted(stages_run(result)) == ["check-params", "evaluate", "lr-find", "train-appearance", "train-baseline",
                                          "train-foci", "train-fusion", "train-lenet"]
    assert "target: particle+dose" in (workspace / "params.yaml").read_text()
    results = read_json(workspace / "metrics/evaluate.json")
    for scores in (results[model] for model in SCORED):
        assert scores["task"] == "particle+dose"
        for head in ("particle", "dose"):
            for key in ("accuracy", "balanced_accuracy", "macro_f1", "log_loss", "sham_accuracy"):
                assert 0 <= scores[f"{head}_{key}"] <= (1 if key != "log_loss" else 10)
        assert scores["log_loss"] == pytest.approx(scores["particle_log_loss"] + scores["dose_log_loss"], abs=1e-5)
        assert scores["accuracy"] <= min(scores["particle_accuracy"], scores["dose_accuracy"])
    for name in ("lenet", "baseline"):
        assert json.loads((workspace / f"models/{name}/model.json").read_text())["classes"] == OUTPUTS
    comparison = (workspace / "metrics/comparison.md").read_text()
    assert "| particle_accuracy |" in comparison and "| dose_accuracy |" in comparison
    assert len(list((workspace / "metrics/saliency").glob("lenet_*.png"))) == len(TWO_HEADS.classes)  # one per pair


HPA = layout_target(["0", "5", "25"], " ")
RXRX1 = layout_target([f"s{i}" for i in range(7)], None)


def test_a_multilabel_target_encodes_indicator_rows_and_text_labels():
    table = pd.DataFrame({"label": ["0 25", "5", "25 5 0", None]})
    assert HPA.multilabel and HPA.outputs == ("0", "5", "25")
    np.testing.assert_array_equal(HPA.encode(table), [[1, 0, 1], [0, 1, 0], [1, 1, 1], [0, 0, 0]])
    with pytest.raises(ValueError, match="unknown label '7'"):
        HPA.encode(pd.DataFrame({"label": ["7"]}))


def test_a_single_label_layout_target_encodes_class_indices():
    assert not RXRX1.multilabel
    np.testing.assert_array_equal(RXRX1.encode(pd.DataFrame({"label": ["s3", "s0", "s6"]})), [3, 0, 6])
    with pytest.raises(ValueError, match="unknown label 's9'"):
        RXRX1.encode(pd.DataFrame({"label": ["s9"]}))
    # its classes are its own attributes, so the BPS summary scores it (Hamming = 2 × error rate / classes)
    proba = np.eye(7)[[3, 0, 1]]
    scores = summary(RXRX1, np.array([3, 0, 6]), proba, np.zeros(3, dtype=bool))
    assert scores["accuracy"] == round(2 / 3, 6) and scores["hamming_loss"] == round(2 / 21, 6)


def test_task_target_reads_the_classes_the_split_wrote(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "split").mkdir(parents=True)
    (tmp_path / "data" / "split" / "summary.json").write_text(json.dumps({"classes": ["2", "10"]}))
    hpa = parse_params({"data": {"source": "layout"}, "split": {"group_by": "none"}, "task": {"target": "labels"},
                       "preprocess": {"scale": "fit"}})
    assert task_target(hpa) == layout_target(["2", "10"], " ")
    single = hpa.model_copy(update={"data": hpa.data.model_copy(update={
        "layout": hpa.data.layout.model_copy(update={"label_separator": None})})})
    assert not task_target(single).multilabel
    assert task_target(parse_params({})).name == "particle"
