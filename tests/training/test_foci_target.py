"""bps.training.foci_target: the foci features as targets, the head, and what it adds to a training step."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from bps.core.errors import PipelineError
from bps.core.params import TrainParams
from bps.core.paths import feature_table
from bps.models.inference import last_linear
from bps.models.networks import PooledLeNet
from bps.training.distributed import unwrap
from bps.training.foci_target import FociRegression, foci_loss, foci_regression, foci_targets
from bps.training.heads import Auxiliary
from bps.training.loop import head_loss, make_deterministic, make_optimizer, train_epoch

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("restore_torch_global_state")

FEATURES = {  # file: (foci_count, foci_mean_area); the appearance column is not a target
    "train": {"a.tif": (0, 1.0), "b.tif": (3, 4.0), "c.tif": (7, 2.0)},
    "val": {"d.tif": (1, 9.0)},
    "test": {"e.tif": (15, 3.0)},
}


@pytest.fixture
def feature_tables(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for split, rows in FEATURES.items():
        feature_table(split).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"filename": list(rows), "appearance_background": 100.0,
                      "foci_count": [count for count, _ in rows.values()],
                      "foci_mean_area": [area for _, area in rows.values()]}).to_csv(feature_table(split), index=False)


def test_the_targets_follow_the_tables_rows_from_any_split_and_weigh_alike(feature_tables):
    files = ["d.tif", "a.tif", "c.tif", "b.tif"]
    targets = foci_targets(pd.DataFrame({"filename": files, "plate": "P1"}))
    raw = np.log1p([[FEATURES[s][f][0], FEATURES[s][f][1]] for f in files for s in FEATURES if f in FEATURES[s]])
    np.testing.assert_allclose(targets, (raw - raw.mean(axis=0)) / raw.std(axis=0), rtol=1e-5)
    np.testing.assert_allclose(targets.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(targets.std(axis=0), 1, rtol=1e-5)
    assert targets.dtype == np.float32 and targets.shape == (4, 2)


def test_images_without_features_are_named_in_one_line(feature_tables):
    with pytest.raises(PipelineError, match="1 training images have no foci features"):
        foci_targets(pd.DataFrame({"filename": ["a.tif", "z.tif"]}))


def test_a_pipeline_without_feature_tables_is_told_to_turn_it_off(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match="no foci features .*set it to 0 there"):
        foci_targets(pd.DataFrame({"filename": ["a.tif"]}))


def test_the_head_reads_in_training_only_and_checkpoints_hold_the_network(feature_tables):
    make_deterministic(0)
    network = PooledLeNet(1, 2, 32)
    model, auxiliary = foci_regression(network, pd.DataFrame({"filename": ["a.tif", "b.tif", "e.tif"]}), 2.0)
    images = torch.rand(5, 1, 32, 32)
    assert auxiliary.outputs == 2 and auxiliary.targets.shape == (3, 2)
    assert model.train()(images).shape == (5, 2 + 2)
    assert torch.equal(model.eval()(images), network(images))
    assert unwrap(model) is network
    assert not last_linear(network)._forward_hooks


def _network_gradient(network: torch.nn.Module, loss: torch.Tensor) -> torch.Tensor:
    network.zero_grad(set_to_none=True)
    loss.backward()
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in network.parameters()])


@pytest.mark.parametrize("weight", [0.5, 3.0])
def test_the_network_descends_on_the_labels_and_on_the_features_by_the_weight(weight):
    """Unlike the plate adversary's, the head's gradient reaches the network unreversed, times ``weight``."""
    make_deterministic(0)
    network = PooledLeNet(1, 2, 32)
    model = FociRegression(network, 3).train()
    images, labels, features = torch.rand(6, 1, 32, 32), torch.tensor([0, 1, 0, 1, 1, 0]), torch.randn(6, 3)
    output = model(images)
    from_labels = _network_gradient(network, head_loss(model(images)[:, :2], labels))
    from_features = _network_gradient(network, foci_loss(model(images)[:, 2:], features, 1.0))
    assert from_features.abs().sum() > 0
    both = head_loss(output[:, :2], labels) + foci_loss(output[:, 2:], features, weight)
    torch.testing.assert_close(_network_gradient(network, both), from_labels + weight * from_features)


def test_a_training_epoch_adds_the_heads_loss_and_reports_the_labels_alone():
    """The epoch's reported loss is the labels' alone; the head's loss steers the same steps elsewhere."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 1, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 2, 40).astype(np.int64)
    features = rng.standard_normal((40, 3)).astype(np.float32)
    make_deterministic(0)
    start = FociRegression(PooledLeNet(1, 2, 32), 3)
    trained = {}
    for weight in (0.0, 1.0):
        model = copy.deepcopy(start)
        optimizer = make_optimizer(model, TrainParams(lr=1e-2))
        auxiliary = Auxiliary(features, 3, lambda out, true, weight=weight: foci_loss(out, true, weight))
        loss = train_epoch(model, optimizer, images, labels, 8, torch.Generator().manual_seed(0), None, CPU,
                           auxiliary=auxiliary)
        trained[weight] = (loss, model)
    first_loss = trained[0.0][0]
    assert 0.5 < first_loss < 1.0  # a cross-entropy of two classes near chance, no squared errors in it
    same = [torch.equal(a, b) for a, b in zip(trained[0.0][1].module.parameters(), trained[1.0][1].module.parameters())]
    assert not all(same)  # the head's loss moved the network
