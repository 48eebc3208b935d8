"""bps.training.batches and bps.training.loop: batching, augmentation (training only), the loop, determinism."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bps.core import options
from bps.core.errors import PipelineError
from bps.core.params import ParamsError, TrainParams, parse_params
from bps.models.inference import EVAL_BATCH_SIZES, pick_device, predict_proba, to_float
from bps.models.networks import LeNet5
from bps.targets.labels import TARGET_NAMES, get_target
from bps.training.batches import RandomAugment, iterate_batches
from bps.training.loop import make_deterministic, make_optimizer, train_epoch

CPU = torch.device("cpu")
# make_deterministic changes process-wide torch settings: tests/conftest.py puts them back.
pytestmark = pytest.mark.usefixtures("restore_torch_global_state")


def _images(count: int, size: int = 32, channels: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, channels, size, size), dtype=np.uint8)


def _labels(count: int, n_classes: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed + 1).integers(0, n_classes, count).astype(np.int64)


def _dihedral(batch: torch.Tensor) -> torch.Tensor:
    """The 8 flips/rotations of every image: N×C×H×W → N×8×C×H×W."""
    views = [torch.rot90(b, k, dims=(-2, -1)) for b in (batch, batch.flip(-1)) for k in range(4)]
    return torch.stack(views, dim=1)


def _windows(batch: torch.Tensor, pad: int) -> torch.Tensor:
    """Every size×size window of the reflection-padded images: N×...×C×H×W → N×...×K×C×H×W."""
    *lead, c, h, w = batch.shape
    padded = F.pad(batch.reshape(-1, c, h, w), (pad,) * 4, mode="reflect").reshape(*lead, c, h + 2 * pad, w + 2 * pad)
    offsets = [(top, left) for top in range(2 * pad + 1) for left in range(2 * pad + 1)]
    return torch.stack([padded[..., top : top + h, left : left + w] for top, left in offsets], dim=-4)


def _matches(source: torch.Tensor, augmented: torch.Tensor, pad: int) -> torch.Tensor:
    """N×8×K booleans: which (flip/rotation, crop offset) turns source image i into augmented image i."""
    candidates = _windows(_dihedral(source), pad)  # N×8×K×C×H×W
    return (candidates == augmented[:, None, None]).flatten(3).all(dim=3)


# --- iterate_batches -------------------------------------------------------------------------


def test_iterate_batches_covers_every_index_once_per_epoch():
    count, batch_size = 103, 10  # ten full batches and a last one of 3
    # Every pixel of image i holds i, so a batch says which images it read.
    images = np.broadcast_to(np.arange(count, dtype=np.uint8)[:, None, None, None], (count, 1, 4, 4)).copy()
    labels = np.arange(count, dtype=np.int64)
    generator = torch.Generator().manual_seed(0)
    orders = []
    for _ in range(2):
        seen, sizes = [], []
        for batch, target in iterate_batches(images, labels, batch_size, generator):
            index = torch.round(batch[:, 0, 0, 0] * 255).long()
            assert torch.equal(index, target)  # labels travel with their images
            assert torch.equal(batch, index.float().div(255).view(-1, 1, 1, 1).expand_as(batch))
            seen += index.tolist()
            sizes.append(len(index))
        assert sizes == [10] * 10 + [3]
        assert sorted(seen) == list(range(count))
        orders.append(seen)
    # Shuffled: neither epoch reads in file order, and the two epochs differ.
    assert orders[0] != list(range(count))
    assert orders[0] != orders[1]


def test_iterate_batches_without_generator_is_in_order_and_unaugmented(tmp_path):
    images = _images(70, size=8, channels=2)
    np.save(tmp_path / "x.npy", images)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")  # how stages read a split
    labels = _labels(70)
    batches = list(iterate_batches(mapped, labels, 32, generator=None, augment=None))
    assert [len(b) for b, _ in batches] == [32, 32, 6]
    stacked = torch.cat([b for b, _ in batches])
    assert stacked.dtype == torch.float32
    assert torch.equal(stacked, torch.from_numpy(images).float() / 255.0)
    np.testing.assert_allclose(stacked.numpy(), images.astype(np.float64) / 255.0, rtol=1e-6)
    assert torch.equal(torch.cat([t for _, t in batches]), torch.from_numpy(labels))


def test_to_float_range():
    images = np.array([0, 51, 255], dtype=np.uint8).reshape(3, 1, 1, 1)
    out = to_float(images)
    assert out.dtype == torch.float32
    assert out.flatten().tolist() == pytest.approx([0.0, 0.2, 1.0])


# --- RandomAugment ---------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "pad"), [((16, 4, 32, 32), 4), ((8, 1, 12, 20), 3), ((8, 1, 16, 16), 0)])
def test_augment_keeps_shape_and_dtype(shape, pad):
    batch = torch.rand(shape)
    out = RandomAugment(torch.Generator().manual_seed(0), pad)(batch)
    assert out.shape == batch.shape
    assert out.dtype == batch.dtype
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_augment_is_deterministic_for_a_seed():
    batch = torch.rand(32, 1, 16, 16)
    first = RandomAugment(torch.Generator().manual_seed(5), 4)(batch)
    again = RandomAugment(torch.Generator().manual_seed(5), 4)(batch)
    other = RandomAugment(torch.Generator().manual_seed(6), 4)(batch)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_augment_without_pad_only_flips_and_rotates():
    batch = torch.rand(64, 3, 16, 16)
    out = RandomAugment(torch.Generator().manual_seed(1), pad=0)(batch)
    # Every image keeps its own pixels...
    assert torch.equal(out.flatten(1).sort(dim=1).values, batch.flatten(1).sort(dim=1).values)
    # ...as one of its 8 flips/rotations, the same one for all its channels.
    matches = _matches(batch, out, pad=0)[:, :, 0]
    assert matches.sum(dim=1).tolist() == [1] * 64
    # Some images change, and more than one kind of transform is drawn.
    changed = (out != batch).flatten(1).any(dim=1)
    assert changed.sum() >= 32
    assert len(set(matches.float().argmax(dim=1).tolist())) >= 4


def test_augment_with_pad_is_a_window_of_the_reflect_padded_image():
    pad, count = 2, 512
    batch = torch.rand(count, 2, 8, 8)
    out = RandomAugment(torch.Generator().manual_seed(2), pad)(batch)
    matches = _matches(batch, out, pad)  # count × 8 transforms × 25 offsets
    assert matches.flatten(1).sum(dim=1).tolist() == [1] * count
    drawn = matches.flatten(1).float().argmax(dim=1)
    transforms, offsets = drawn // matches.shape[2], drawn % matches.shape[2]
    # Over 512 images every flip/rotation and every offset 0..2·pad in both directions occurs.
    assert set(transforms.tolist()) == set(range(8))
    assert set(offsets.tolist()) == set(range((2 * pad + 1) ** 2))
    assert (out != batch).flatten(1).any(dim=1).sum() > count // 2


# --- training and evaluation -----------------------------------------------------------------


def test_predict_proba_is_a_plain_eval_forward_pass():
    torch.manual_seed(3)
    model = LeNet5(1, 3, 32)
    model.train()  # predict_proba must switch to eval itself
    images = _images(40)
    proba = predict_proba(model, images, CPU)
    assert not model.training
    with torch.no_grad():
        expected = torch.softmax(model.eval()(to_float(images)), dim=1).numpy()
        flipped = torch.softmax(model(to_float(images).flip(-1)), dim=1).numpy()
    np.testing.assert_allclose(proba, expected, rtol=1e-5, atol=1e-6)
    # The check can see augmentation: a flipped input gives other probabilities.
    assert not np.allclose(flipped, expected, rtol=1e-5, atol=1e-6)


def test_predict_proba_covers_the_whole_split(tmp_path):
    count = 1030  # full evaluation batches and a partial one
    assert count % EVAL_BATCH_SIZES["cpu"] != 0 and count > 2 * EVAL_BATCH_SIZES["cpu"]
    torch.manual_seed(4)
    model = LeNet5(1, 3, 32)
    images = _images(count, seed=4)
    np.save(tmp_path / "x.npy", images)
    proba = predict_proba(model, np.load(tmp_path / "x.npy", mmap_mode="r"), CPU)
    assert proba.shape == (count, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-5)
    assert (proba >= 0).all()
    # Row i belongs to image i, the last partial batch included.
    with torch.no_grad():
        tail = torch.softmax(model.eval()(to_float(images[-10:])), dim=1).numpy()
    np.testing.assert_allclose(proba[-10:], tail, rtol=1e-5, atol=1e-6)


def test_train_epoch_learns_and_returns_mean_loss():
    make_deterministic(0)
    images, labels = _images(64, size=16), _labels(64)
    images[labels == 1] //= 4  # class 1 is darker: learnable in a few steps
    model = LeNet5(1, 2, 16)
    optimizer = make_optimizer(model, TrainParams(lr=3e-3))
    losses = [
        train_epoch(model, optimizer, images, labels, 16, torch.Generator().manual_seed(0), None, CPU)
        for _ in range(15)
    ]
    assert model.training
    assert all(np.isfinite(losses))
    # The first epoch's loss is a per-image mean: near ln 2 for two classes, not a batch sum.
    assert 0.3 < losses[0] < 1.5
    assert losses[-1] < losses[0]


def test_training_uses_augmentation():
    make_deterministic(0)
    images, labels = _images(64, size=16), _labels(64)
    start = LeNet5(1, 2, 16)

    def weights_after(augment_seed: int | None) -> dict[str, torch.Tensor]:
        model = copy.deepcopy(start)
        optimizer = make_optimizer(model, TrainParams(lr=1e-2))
        augment = RandomAugment(torch.Generator().manual_seed(augment_seed), 4) if augment_seed is not None else None
        train_epoch(model, optimizer, images, labels, 16, torch.Generator().manual_seed(0), augment, CPU)
        return model.state_dict()

    plain, plain_again, augmented = weights_after(None), weights_after(None), weights_after(9)
    assert all(torch.equal(plain[k], plain_again[k]) for k in plain)
    assert any(not torch.equal(plain[k], augmented[k]) for k in plain)


def _short_training(seed: int, images: np.ndarray, labels: np.ndarray) -> dict[str, torch.Tensor]:
    """What stages/train_lenet.py does, on a small data set for 2 epochs."""
    params = TrainParams(seed=seed, epochs=2, batch_size=32, lr=1e-3)
    generator = make_deterministic(params.seed)
    model = LeNet5(1, 2, 32)
    optimizer = make_optimizer(model, params)
    augment = RandomAugment(generator, params.crop_pad)
    for _ in range(params.epochs):
        train_epoch(model, optimizer, images, labels, params.batch_size, generator, augment, CPU)
    return model.state_dict()


def test_training_is_deterministic_for_a_seed():
    images, labels = _images(200, seed=10), _labels(200, seed=10)
    first = _short_training(0, images, labels)
    torch.manual_seed(12345)  # whatever ran in between must not matter
    second = _short_training(0, images, labels)
    other = _short_training(1, images, labels)
    assert torch.are_deterministic_algorithms_enabled()
    assert set(first) == set(second)
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert any(not torch.equal(first[name], other[name]) for name in first)


def test_training_without_the_nan_fill_gives_the_same_weights(monkeypatch):
    """make_deterministic skips filling new tensors with NaN: no kernel of a training step reads
    uninitialised memory, so the weights are those of a run with the fill."""
    images, labels = _images(200, seed=11), _labels(200, seed=11)
    unfilled = _short_training(0, images, labels)
    assert not torch.utils.deterministic.fill_uninitialized_memory

    deterministic = make_deterministic

    def filling(seed: int) -> torch.Generator:
        generator = deterministic(seed)
        torch.utils.deterministic.fill_uninitialized_memory = True
        return generator

    monkeypatch.setitem(globals(), "make_deterministic", filling)
    filled = _short_training(0, images, labels)
    for name in unfilled:
        assert torch.equal(unfilled[name], filled[name]), name


# --- device and optimiser --------------------------------------------------------------------


def test_pick_device_cpu():
    assert pick_device("cpu") == torch.device("cpu")


def test_pick_device_auto():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_pick_device_cuda_without_cuda_is_a_pipeline_error():
    with pytest.raises(PipelineError, match="train.device"):
        pick_device("cuda")


@pytest.mark.parametrize(
    ("name", "cls"), [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)]
)
def test_make_optimizer(name, cls):
    model = LeNet5(1, 2, 16)
    optimizer = make_optimizer(model, TrainParams(optimizer=name, lr=0.025, weight_decay=0.125))
    assert type(optimizer) is cls
    (group,) = optimizer.param_groups
    assert group["lr"] == 0.025
    assert group["weight_decay"] == 0.125
    assert {id(p) for p in group["params"]} == {id(p) for p in model.parameters()}
    if name == "sgd":
        assert group["momentum"] == 0.9


# --- targets ---------------------------------------------------------------------------------


def test_unknown_target_is_a_params_error():
    with pytest.raises(ParamsError) as caught:
        parse_params({"task": {"target": "dose"}})
    message = str(caught.value)
    assert "task.target" in message
    assert "'dose'" in message
    for name in TARGET_NAMES:
        assert f"'{name}'" in message


def test_every_allowed_target_builds():
    for name in options.BPS_TARGETS:
        assert parse_params({"task": {"target": name}}).task.target == name
        assert get_target(name).classes
    with pytest.raises(ValueError, match="dose"):
        get_target("dose")
