"""Training controls: LR schedules, early stopping, class weighting, the weighted sampler, AMP, NHWC.

The plain loop (batching, augmentation, determinism) is covered by test_training.py.
"""

import copy
import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dvclive import Live
from torch import nn

from bps.core.params import TrainParams
from bps.models.inference import to_float
from bps.models.networks import LeNet5, SmallCNN, resnet
from bps.targets.labels import EVEN_ODDS, get_target
from bps.training.batches import balanced_weights, iterate_batches
from bps.training.distributed import World
from bps.training.loop import EarlyStopping, Split, WeightAverage, fit, make_optimizer, make_scheduler, train_epoch

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _restore_torch_rng():
    """Tests seed torch's global generator (dropout draws from it): leave it as it was."""
    rng = torch.get_rng_state()
    yield
    torch.set_rng_state(rng)


def _images(count: int, size: int = 16, channels: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, channels, size, size), dtype=np.uint8)


def _labels(count: int, n_classes: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed + 1).integers(0, n_classes, count).astype(np.int64)


def _trained(
    start: nn.Module,
    images,
    labels,
    batch_size: int = 8,
    seed: int = 0,
    optimizer="adam",
    *,
    channels_last=False,
    **options,
):
    """A copy of ``start`` after one epoch, and the epoch's mean loss."""
    model = copy.deepcopy(start)
    if channels_last:  # as stages/train_lenet.py does
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, TrainParams(lr=1e-2, optimizer=optimizer))
    torch.manual_seed(seed)  # dropout
    generator = torch.Generator().manual_seed(seed)
    loss = train_epoch(
        model, optimizer, images, labels, batch_size, generator, None, CPU, channels_last=channels_last, **options
    )
    return model, loss


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# --- learning-rate schedules -----------------------------------------------------------------


def _rates(params: TrainParams, epochs: int) -> list[float]:
    """The rate of each epoch, read before the epoch as stages/train_lenet.py logs it."""
    model = nn.Linear(2, 1)
    optimizer = make_optimizer(model, params)
    scheduler = make_scheduler(optimizer, params)
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return rates


def test_no_scheduler_keeps_the_rate():
    params = TrainParams(lr=0.1, scheduler="none", lr_gamma=0.5, lr_step_epochs=1)
    assert make_scheduler(make_optimizer(nn.Linear(2, 1), params), params) is None
    assert _rates(params, 4) == [0.1] * 4


def test_step_scheduler_halves_every_n_epochs():
    params = TrainParams(lr=0.1, scheduler="step", lr_step_epochs=2, lr_gamma=0.5)
    assert _rates(params, 7) == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.0125])


def test_step_scheduler_uses_gamma():
    params = TrainParams(lr=0.2, scheduler="step", lr_step_epochs=3, lr_gamma=0.1)
    assert _rates(params, 7) == pytest.approx([0.2, 0.2, 0.2, 0.02, 0.02, 0.02, 0.002])


def test_cosine_scheduler_anneals_to_zero_over_the_epochs():
    params = TrainParams(lr=0.1, scheduler="cosine", epochs=4)
    # 0.1 · (1 + cos(π k / 4)) / 2 for k = 0..4
    expected = [0.1, 0.0853553, 0.05, 0.0146447, 0.0]
    assert _rates(params, 5) == pytest.approx(expected, abs=1e-7)
    half = TrainParams(lr=0.1, scheduler="cosine", epochs=8)
    assert _rates(half, 5)[4] == pytest.approx(0.05)  # halfway through 8 epochs: half the rate


def test_exponential_scheduler_multiplies_every_epoch():
    params = TrainParams(lr=0.1, scheduler="exponential", lr_gamma=0.5, lr_step_epochs=3)
    assert _rates(params, 5) == pytest.approx([0.1, 0.05, 0.025, 0.0125, 0.00625])
    slow = TrainParams(lr=0.1, scheduler="exponential", lr_gamma=0.9)
    assert _rates(slow, 4) == pytest.approx([0.1, 0.09, 0.081, 0.0729])


# --- early stopping --------------------------------------------------------------------------


def _run(stopping: EarlyStopping, values: list[float]) -> tuple[list[bool], list[bool]]:
    improved, stop = [], []
    for value in values:
        improved.append(stopping.improved(value))
        stop.append(stopping.should_stop)
    return improved, stop


def test_early_stopping_after_patience_epochs_without_improvement():
    improved, stop = _run(EarlyStopping(patience=2, lower_is_better=False), [0.5, 0.6, 0.6, 0.55, 0.7])
    assert improved == [True, True, False, False, True]  # an equal score is no improvement
    assert stop[:4] == [False, False, False, True]


def test_early_stopping_counts_from_the_last_improvement():
    stopping = EarlyStopping(patience=2, lower_is_better=False)
    improved, stop = _run(stopping, [0.5, 0.4, 0.6, 0.59, 0.61, 0.3])
    assert improved == [True, False, True, False, True, False]
    assert stop == [False] * 6  # never two bad epochs in a row
    assert stopping.best == pytest.approx(-0.61)  # stored with the sign that makes lower better
    stopping.improved(0.2)
    assert stopping.should_stop


def test_early_stopping_patience_zero_never_stops():
    stopping = EarlyStopping(patience=0, lower_is_better=False)
    improved, stop = _run(stopping, [0.9] + [0.1] * 50)
    assert improved == [True] + [False] * 50  # the best epoch is still tracked, for the checkpoint
    assert not any(stop)


def test_early_stopping_on_a_loss_wants_lower_values():
    improved, stop = _run(EarlyStopping(patience=2, lower_is_better=True), [1.0, 0.8, 0.9, 0.7, 0.75, 0.71])
    assert improved == [True, True, False, True, False, False]
    assert stop == [False, False, False, False, False, True]
    # The same numbers as a score to maximise: 0.8 is worse than 1.0.
    improved, stop = _run(EarlyStopping(patience=2, lower_is_better=False), [1.0, 0.8, 0.9])
    assert improved == [True, False, False]
    assert stop[-1]


# --- shams at even odds (train.shams: uniform) --------------------------------------------------


def _batch_cue_and_damage(count: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """16×16 images whose batch brightness (Fe 120, X-ray 60) every nucleus shows, shams too, and
    whose damage (a bright 3×3 spot, Fe top left, X-ray bottom right) only the irradiated show."""
    rng = np.random.default_rng(seed)
    particle, sham = rng.integers(0, 2, count), np.arange(count) % 3 == 0
    images = np.where(particle == 0, 120, 60)[:, None, None, None] + rng.integers(0, 30, (count, 1, 16, 16))
    for index in np.flatnonzero(~sham):
        corner = 2 if particle[index] == 0 else 11
        images[index, 0, corner : corner + 3, corner : corner + 3] = 250
    return images.astype(np.uint8), particle.astype(np.int64), sham


def test_shams_at_even_odds_are_not_told_apart_by_their_batch():
    images, particle, sham = _batch_cue_and_damage()
    torch.manual_seed(0)
    start = nn.Sequential(nn.Flatten(), nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, 2))
    sham_proba = {}
    for name, labels in (("include", particle), ("uniform", np.where(sham, EVEN_ODDS, particle))):
        model = copy.deepcopy(start)
        optimizer = make_optimizer(model, TrainParams(lr=3e-3))
        generator = torch.Generator().manual_seed(0)
        for _ in range(40):
            train_epoch(model, optimizer, images, labels, 16, generator, None, CPU)
        with torch.no_grad():
            proba = torch.softmax(model(to_float(torch.from_numpy(images))), dim=1).numpy()
        assert (proba[~sham].argmax(1) == particle[~sham]).all()  # the damage is learnt either way
        fe, x_ray = proba[sham & (particle == 0), 0], proba[sham & (particle == 1), 0]
        sham_proba[name] = fe.mean() - x_ray.mean(), np.abs(proba[sham, 0] - 0.5).mean()
    assert sham_proba["include"][0] > 0.3  # their batch labels: Fe shams are called Fe more than X-ray shams are
    assert abs(sham_proba["uniform"][0]) < 0.1 and sham_proba["uniform"][1] < 0.1  # even odds: both near 0.5


# --- class balance: weights and the weighted sampler -----------------------------------------


def test_balanced_weights_by_hand():
    labels = np.array([0, 0, 0, 1, 2, 2])
    weights = balanced_weights(labels, 4)
    # n / (k · count): 6 / (4·3), 6 / (4·1), 6 / (4·2); class 3 never occurs
    np.testing.assert_allclose(weights, [0.5, 1.5, 0.75, 0.0])
    per_class_total = np.bincount(labels, weights=weights[labels], minlength=4)
    np.testing.assert_allclose(per_class_total, [1.5, 1.5, 1.5, 0.0])  # every present class weighs the same
    np.testing.assert_allclose(balanced_weights(np.array([1, 0, 1, 0]), 2), [1.0, 1.0])


def _indexed(count: int) -> np.ndarray:
    """count×1×2×2 images whose every pixel is the image's own index, so a batch says what it read."""
    return np.broadcast_to(np.arange(count, dtype=np.uint8)[:, None, None, None], (count, 1, 2, 2)).copy()


def _drawn(images, labels, weights, seed: int, epochs: int, batch_size: int = 16) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    orders = []
    for _ in range(epochs):
        order = []
        for batch, target in iterate_batches(images, labels, batch_size, generator, None, weights):
            index = torch.round(batch[:, 0, 0, 0] * 255).long()
            assert torch.equal(target, torch.from_numpy(labels)[index])  # labels travel with their images
            order += index.tolist()
        orders.append(order)
    return orders


def test_weighted_sampler_balances_an_imbalanced_split():
    count = 100
    labels = np.array([0] * 90 + [1] * 10, dtype=np.int64)
    images = _indexed(count)
    weights = balanced_weights(labels, 2)[labels]
    orders = _drawn(images, labels, weights, seed=0, epochs=60)
    assert all(len(order) == count for order in orders)  # an epoch keeps the split's length
    drawn = np.concatenate(orders)
    minority = (labels[drawn] == 1).mean()
    assert 0.45 < minority < 0.55  # 6000 draws: the standard deviation is 0.0065
    assert len(set(drawn[labels[drawn] == 1].tolist())) == 10  # every minority image is drawn
    assert any(len(set(order)) < count for order in orders)  # with replacement: repeats in an epoch
    # Without weights every epoch is a permutation: the minority stays at 10 %.
    plain = np.concatenate(_drawn(images, labels, None, seed=0, epochs=5))
    assert (labels[plain] == 1).mean() == pytest.approx(0.1)


def test_weighted_sampler_draws_in_proportion_to_the_weights():
    labels = np.zeros(40, dtype=np.int64)
    weights = np.ones(40)
    weights[:10] = 0.0  # never drawn
    weights[10:20] = 3.0  # three times as often as the last 20
    drawn = np.concatenate(_drawn(_indexed(40), labels, weights, seed=1, epochs=50))
    assert drawn.min() >= 10
    share = (drawn < 20).mean()  # expected 30 / 50
    assert 0.56 < share < 0.64


def test_weighted_sampler_is_deterministic_for_a_seed():
    labels = np.array([0] * 30 + [1] * 6 + [2] * 4, dtype=np.int64)
    images, weights = _indexed(40), balanced_weights(labels, 3)[labels]
    first = _drawn(images, labels, weights, seed=7, epochs=3)
    assert first == _drawn(images, labels, weights, seed=7, epochs=3)
    assert first != _drawn(images, labels, weights, seed=8, epochs=3)
    assert first[0] != first[1]  # a new draw every epoch


# --- train_epoch options ---------------------------------------------------------------------


def test_class_weights_weight_the_loss():
    images, labels = _images(24, seed=2), np.array([0] * 18 + [1] * 6, dtype=np.int64)
    torch.manual_seed(0)
    start = LeNet5(1, 2, 16)
    class_weights = np.array([0.25, 3.0])

    # One batch: the returned loss is the start model's, Σ w[y]·CE / n (LeNet has no dropout or BN).
    _, weighted_loss = _trained(start, images, labels, batch_size=24, class_weights=class_weights)
    with torch.no_grad():
        logits = start(torch.from_numpy(images).float() / 255)
        per_image = F.cross_entropy(logits, torch.from_numpy(labels), reduction="none")
    expected = float((torch.from_numpy(class_weights).float()[labels] * per_image).sum()) / len(images)
    assert weighted_loss == pytest.approx(expected, rel=1e-5)
    _, plain_loss = _trained(start, images, labels, batch_size=24)
    assert plain_loss == pytest.approx(float(per_image.mean()), rel=1e-5)
    assert weighted_loss != pytest.approx(plain_loss, rel=1e-3)

    weighted, _ = _trained(start, images, labels, class_weights=class_weights)
    unweighted, _ = _trained(start, images, labels)
    ones, _ = _trained(start, images, labels, class_weights=np.ones(2))
    assert not _same_weights(weighted, unweighted)
    for a, b in zip(ones.parameters(), unweighted.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # weights of 1 change nothing


def test_sample_weights_change_what_an_epoch_trains_on():
    images, labels = _images(32, seed=3), np.array([0] * 28 + [1] * 4, dtype=np.int64)
    torch.manual_seed(0)
    start = LeNet5(1, 2, 16)
    sampled, _ = _trained(start, images, labels, sample_weights=balanced_weights(labels, 2)[labels])
    again, _ = _trained(start, images, labels, sample_weights=balanced_weights(labels, 2)[labels])
    shuffled, _ = _trained(start, images, labels)
    assert _same_weights(sampled, again)
    assert not _same_weights(sampled, shuffled)


def test_channels_last_trains_the_same_model():
    # Three channels: for one channel NCHW and NHWC are the same layout and the test could not tell.
    images, labels = _images(24, channels=3, seed=4), _labels(24, seed=4)
    torch.manual_seed(0)
    start = SmallCNN(3, 2, 16)
    layouts = []
    start.register_forward_pre_hook(
        lambda _, inputs: layouts.append(inputs[0].is_contiguous(memory_format=torch.channels_last))
    )

    # SGD, not Adam: Adam's first steps move every weight by ±lr whatever the gradient's size, so
    # rounding noise in a near-zero gradient would flip whole steps.
    nchw, nchw_loss = _trained(start, images, labels, optimizer="sgd", channels_last=False)
    nhwc, nhwc_loss = _trained(start, images, labels, optimizer="sgd", channels_last=True)

    assert layouts == [False] * 3 + [True] * 3  # train_epoch really fed NHWC batches
    assert nhwc.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert nhwc_loss == pytest.approx(nchw_loss, rel=1e-4)
    for (name, a), b in zip(nchw.state_dict().items(), nhwc.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5, msg=name)
    assert not _same_weights(start, nchw)  # training moved the weights


def test_autocast_off_is_the_plain_float32_loop():
    images, labels = _images(24, seed=5), _labels(24, seed=5)
    torch.manual_seed(0)
    start = LeNet5(1, 2, 16)
    model, loss = _trained(start, images, labels, autocast=False)

    # The same epoch written out by hand, in float32 throughout.
    reference = copy.deepcopy(start)
    optimizer = make_optimizer(reference, TrainParams(lr=1e-2))
    generator, total = torch.Generator().manual_seed(0), 0.0
    for batch, target in iterate_batches(images, labels, 8, generator):
        optimizer.zero_grad()
        batch_loss = F.cross_entropy(reference(batch), target, reduction="sum")
        batch_loss.backward()
        optimizer.step()
        total += batch_loss.item()
    assert loss == total / len(images)
    assert _same_weights(model, reference)

    # autocast=True is not a no-op (bfloat16 on CPU too), so the equality above means something.
    _, bf16_loss = _trained(start, images, labels, autocast=True)
    assert bf16_loss != loss
    assert bf16_loss == pytest.approx(loss, rel=5e-2)
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="AMP (bfloat16 autocast) runs on a CUDA device")
def test_autocast_on_cuda_trains_in_bfloat16_with_float32_weights():
    cuda = torch.device("cuda")
    images, labels = _images(64, seed=6), _labels(64, seed=6)
    torch.manual_seed(0)
    start = LeNet5(1, 2, 16).to(cuda)
    results = {}
    for autocast in (False, True):
        model = copy.deepcopy(start)
        optimizer = make_optimizer(model, TrainParams(lr=1e-3))
        generator = torch.Generator().manual_seed(0)
        results[autocast] = train_epoch(model, optimizer, images, labels, 16, generator, None, cuda, autocast=autocast)
        assert all(p.dtype == torch.float32 and p.is_cuda for p in model.parameters())
    assert math.isfinite(results[True])
    assert results[True] == pytest.approx(results[False], rel=5e-2)


def test_shuffled_epochs_never_end_on_a_single_image():
    images, labels = _indexed(17), np.zeros(17, dtype=np.int64)
    generator = torch.Generator().manual_seed(0)
    for weights in (None, np.ones(17)):
        batches = list(iterate_batches(images, labels, 8, generator, None, weights))
        assert [len(b) for b, _ in batches] == [8, 9]
    shuffled = torch.cat([b for b, _ in iterate_batches(images, labels, 8, generator)])
    assert sorted(torch.round(shuffled[:, 0, 0, 0] * 255).long().tolist()) == list(range(17))
    # Evaluation (no generator) keeps exact batches; a split of one image stays one batch.
    assert [len(b) for b, _ in iterate_batches(images, labels, 8)] == [8, 8, 1]
    assert [len(b) for b, _ in iterate_batches(images[:1], labels[:1], 8, generator)] == [1]
    assert [len(b) for b, _ in iterate_batches(images[:10], labels[:10], 8, generator)] == [8, 2]


def test_batchnorm_models_train_when_the_last_batch_has_one_image():
    # 9 images in batches of 8 leave one image alone; a 32-pixel ResNet pools it to 1×1 before
    # its last BatchNorm, which cannot normalise a single value per channel in training mode.
    images, labels = _images(9, size=32, seed=7), _labels(9, seed=7)
    torch.manual_seed(0)
    model = resnet(18, 1, 2, 32)
    optimizer = make_optimizer(model, TrainParams(lr=1e-3))
    generator = torch.Generator().manual_seed(0)
    loss = train_epoch(model, optimizer, images, labels, 8, generator, None, CPU)
    assert math.isfinite(loss)


# --- a moving average of the weights ---------------------------------------------------------------


def test_weight_average_warms_up_and_swaps_back():
    network = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        network.weight.fill_(1.0)
    average = WeightAverage(network, decay=0.9)
    with torch.no_grad():
        network.weight.fill_(3.0)
    average.update()  # step 1: decay min(0.9, 2/11)
    expected = 1.0 + (1 - 2 / 11) * (3.0 - 1.0)
    with average.swapped_in():
        assert network.weight.item() == pytest.approx(expected)
    assert network.weight.item() == 3.0
    for _ in range(500):  # long after the warm-up the decay is 0.9: the average reaches a constant weight
        average.update()
    with average.swapped_in():
        assert network.weight.item() == pytest.approx(3.0)


class _Log:
    """What fit logs through (dvclive's Live), silent."""

    def __init__(self) -> None:
        self.summary: dict = {}

    def log_metric(self, name: str, value: float) -> None:
        pass

    def next_step(self) -> None:
        pass


def test_fit_validates_and_keeps_the_average_when_asked():
    """With ema_decay the kept weights are the average's (not the last step's); without it, the last step's."""
    images, labels = _images(64), _labels(64)
    target = get_target("particle")
    kept: dict[float, list[dict]] = {}
    finals = {}
    for decay in (0.0, 0.9):
        torch.manual_seed(0)
        model = LeNet5(1, 2, 16)
        config = TrainParams(epochs=1, batch_size=8, ema_decay=decay, lr=1e-2)
        kept[decay] = []

        def on_better(epoch, metrics, model=model, decay=decay):
            kept[decay].append(copy.deepcopy(model.state_dict()))

        fit(model, config, target, Split(images, labels), Split(images, labels), torch.Generator().manual_seed(0),
            CPU, World(), _Log(), on_better)
        finals[decay] = model.state_dict()
    same = [torch.equal(a, b) for a, b in zip(kept[0.0][0].values(), finals[0.0].values())]
    assert all(same)
    averaged = [torch.equal(a, b) for a, b in zip(kept[0.9][0].values(), finals[0.9].values())]
    assert not any(averaged)
    assert all(torch.equal(a, b) for a, b in zip(finals[0.0].values(), finals[0.9].values()))  # same training


def test_the_summary_names_the_kept_epoch_and_its_scores_beside_the_last_ones(tmp_path, monkeypatch):
    """metrics.json, what `dvc metrics diff` and `dvc exp show` read: ``kept`` holds the scores of the
    epoch whose weights were kept (the lowest validation loss here), not the last epoch's."""
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    images, labels = _images(64), _labels(64)
    torch.manual_seed(0)
    config = TrainParams(epochs=5, batch_size=8, lr=3e-2, select_metric="val_loss")
    folder = tmp_path / "metrics"
    with Live(str(folder), dvcyaml=None, save_dvc_exp=False) as live:
        fit(LeNet5(1, 2, 16), config, get_target("particle"), Split(images, labels), Split(images[:32], labels[:32]),
            torch.Generator().manual_seed(0), CPU, World(), live, lambda epoch, metrics: None)
    summary = json.loads((folder / "metrics.json").read_text())
    with open(folder / "plots/metrics/val_loss.tsv") as handle:
        losses = [float(row["val_loss"]) for row in csv.DictReader(handle, delimiter="\t")]
    assert len(losses) == 5 and summary["val_loss"] == losses[-1]
    assert summary["kept"]["val_loss"] == min(losses) and summary["best_epoch"] == losses.index(min(losses))
    assert set(summary["kept"]) == {"train_loss", "val_loss", "val_accuracy", "val_macro_f1"}
