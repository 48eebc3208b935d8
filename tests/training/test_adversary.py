"""bps.training.adversary: the sham plates, the gradient reversal, and what the adversary leaves readable."""

import pandas as pd
import pytest
import torch

from bps.core.errors import PipelineError
from bps.models.inference import last_linear
from bps.models.networks import LeNet5
from bps.training.adversary import NO_PLATE, PlateAdversary, _Reverse, adversary_loss, sham_plates
from bps.training.distributed import unwrap
from bps.training.loop import head_loss, make_deterministic

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("restore_torch_global_state")


def _table(plates: list[str], doses: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"plate": plates, "dose_Gy": doses})


def test_sham_plates_numbers_the_sham_plates_and_leaves_the_irradiated_out():
    table = _table(["P3", "P1", "P3", "P2", "P1", "P4"], [0.0, 0.3, 0.0, 0.0, 0.3, 1.0])
    assert sham_plates(table).tolist() == [0, NO_PLATE, 0, 1, NO_PLATE, NO_PLATE]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (_table(["P1", "P1", "P2"], [0.0, 0.0, 1.0]), "1 sham plates, too few"),
        (_table(["P1", "P2"], [1.0, 1.0]), "0 sham plates, too few"),
        (pd.DataFrame({"plate": ["P1"]}), "needs plates and doses"),
    ],
)
def test_sham_plates_refuses_what_gives_nothing_to_tell_apart(table, message):
    with pytest.raises(PipelineError, match=message):
        sham_plates(table)


def test_the_reversal_is_the_identity_forward_and_negates_the_gradient_scaled():
    features = torch.randn(3, 4, requires_grad=True)
    out = _Reverse.apply(features, 0.25)
    assert torch.equal(out, features)
    out.sum().backward()
    assert torch.equal(features.grad, torch.full((3, 4), -0.25))


def test_the_wrapper_adds_plate_logits_in_training_only_and_checkpoints_hold_the_network():
    make_deterministic(0)
    network = LeNet5(1, 2, 32)
    model = PlateAdversary(network, 3, 1.0)
    images = torch.rand(5, 1, 32, 32)
    assert model.train()(images).shape == (5, 2 + 3)
    assert torch.equal(model.eval()(images), network(images))
    assert unwrap(model) is network
    assert not last_linear(network)._forward_hooks  # the network run on its own keeps nothing, in training or not


def _network_gradient(network: torch.nn.Module, loss: torch.Tensor) -> torch.Tensor:
    network.zero_grad(set_to_none=True)
    loss.backward()
    # The plate head reads the last linear layer's input: that layer gets no gradient from it.
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in network.parameters()])


@pytest.mark.parametrize("weight", [0.0, 0.5, 2.0])
def test_the_network_descends_on_the_labels_and_ascends_on_the_plates_by_the_weight(weight):
    """A training step's gradient on the network is the labels' loss's minus ``weight`` times the
    plate head's (the head itself descends on its loss, as any layer does)."""
    make_deterministic(0)
    network = LeNet5(1, 2, 32)
    model = PlateAdversary(network, 3, weight).train()
    images, labels = torch.rand(6, 1, 32, 32), torch.tensor([0, 1, 0, 1, 1, 0])
    plates = torch.tensor([0, 2, NO_PLATE, 1, NO_PLATE, 0])

    def trained_loss(with_plates: bool) -> torch.Tensor:
        output = model(images)
        loss = head_loss(output[:, :2], labels)
        return loss + adversary_loss(output[:, 2:], plates) if with_plates else loss

    hidden = network.classifier[:-1](network.features(images))  # what the last linear layer reads, unreversed
    from_plates = _network_gradient(network, adversary_loss(model.head(hidden), plates))
    from_labels = _network_gradient(network, trained_loss(with_plates=False))
    assert from_plates.abs().sum() > 0
    torch.testing.assert_close(_network_gradient(network, trained_loss(with_plates=True)),
                               from_labels - weight * from_plates)
