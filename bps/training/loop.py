"""The CNN training loop: :func:`fit` runs the epochs; its parts (determinism, optimiser, schedule,
early stopping, the loss, one epoch) are here too, and what happens to a better epoch is the caller's
``on_better`` hook (bps/training/kept_epoch.py keeps its weights)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from bps.core import options
from bps.core.errors import PipelineError
from bps.core.params import TrainParams
from bps.models.inference import to_device
from bps.targets.labels import EVEN_ODDS, Target
from bps.targets.metrics import validation_scores
from bps.training.batches import Augment, Shard, iterate_batches, training_augment, training_weights
from bps.training.distributed import World, predict_whole_split, sum_over_ranks, unwrap
from bps.training.heads import Auxiliary


def make_deterministic(seed: int, device_type: str = "cpu") -> torch.Generator:
    """Seed torch and insist on deterministic kernels: same params and seed, same numbers on CPU.

    On CUDA some kernels have no deterministic version: there it warns instead of failing.
    Deterministic mode would also fill every new tensor with NaN, a debugging aid that catches reads
    of uninitialised memory: no kernel here reads it (the kept models are byte-identical without
    the fill), and the fill is an extra pass over every activation and gradient of every step.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    # use_deterministic_algorithms would also set torch.compile's flag, importing the compiler (1.6 s
    # of every CNN stage's start); nothing here compiles, and this sets the same kernel switch.
    torch.set_deterministic_debug_mode("warn" if device_type != "cpu" else "error")
    torch.utils.deterministic.fill_uninitialized_memory = False
    return torch.Generator().manual_seed(seed)


# Keyed by the names in bps.core.options, which params validation lists without importing torch.
OPTIMIZERS = options.registry(
    options.OPTIMIZERS,
    adam=torch.optim.Adam,
    adamw=torch.optim.AdamW,
    sgd=partial(torch.optim.SGD, momentum=0.9),
)
SCHEDULERS = options.registry(
    options.SCHEDULERS,
    none=lambda optimizer, params: None,
    step=lambda optimizer, params: torch.optim.lr_scheduler.StepLR(optimizer, params.lr_step_epochs, params.lr_gamma),
    cosine=lambda optimizer, params: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=params.epochs),
    exponential=lambda optimizer, params: torch.optim.lr_scheduler.ExponentialLR(optimizer, params.lr_gamma),
)


def _choose(table: dict, key: str, name: str):
    """``table[name]``, or one line naming the key and the allowed values (never a silent default)."""
    if name not in table:
        raise PipelineError(f"{key}: unknown {name!r} (allowed: {', '.join(table)})")
    return table[name]


def make_optimizer(model: nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    optimizer = _choose(OPTIMIZERS, "train.optimizer", params.optimizer)
    return optimizer(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, params: TrainParams):
    """The learning-rate schedule, stepped once per epoch (None for a constant rate)."""
    return _choose(SCHEDULERS, "train.scheduler", params.scheduler)(optimizer, params)


class EarlyStopping:
    """Tracks the best value of a validation metric; says stop after ``patience`` epochs without
    improvement (``patience`` 0 never stops)."""

    def __init__(self, patience: int, lower_is_better: bool) -> None:
        self.patience, self.sign = patience, 1.0 if lower_is_better else -1.0
        self.best, self.stale = float("inf"), 0

    def improved(self, value: float) -> bool:
        """Record this epoch's value; True when it is the best so far."""
        if self.sign * value < self.best:
            self.best, self.stale = self.sign * value, 0
            return True
        self.stale += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.stale >= self.patience


def head_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    head_sizes: Sequence[int] = (),
    class_weights: torch.Tensor | None = None,
    multilabel: bool = False,
) -> torch.Tensor:
    """Summed cross-entropy of a batch: the one place that knows how a target's heads are trained.

    One head (``head_sizes`` of length 0 or 1): cross-entropy over all the logits. Several: each
    head's slice of the logits against its part of the joint label, added per image (the joint
    negative log-likelihood of heads that predict independently). ``class_weights`` (one per joint
    class) weight each image by its label, as ``CrossEntropyLoss(weight=...)`` does.

    ``multilabel``: ``labels`` are N×L 0/1 indicators and each logit is one label's own yes/no,
    so the loss is binary cross-entropy summed over labels and images, ``class_weights`` being
    ``BCEWithLogitsLoss``'s ``pos_weight`` (bps.targets.multilabel.positive_weights).

    One head also takes EVEN_ODDS labels (``train.shams: uniform``): such an image's loss is the
    cross-entropy against equal odds of every class, lowest when the model cannot tell.
    """
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, labels.float(), pos_weight=class_weights, reduction="sum")
    if len(head_sizes) <= 1:
        named = labels != EVEN_ODDS
        loss = F.cross_entropy(logits[named], labels[named], weight=class_weights, reduction="sum")
        return loss - F.log_softmax(logits[~named], dim=1).mean(dim=1).sum()  # cross-entropy against equal odds
    per_image = torch.zeros(len(labels), device=logits.device)
    remaining = labels
    for block, size in reversed(list(zip(logits.split(list(head_sizes), dim=1), head_sizes))):
        per_image = per_image + F.cross_entropy(block, remaining % size, reduction="none")
        remaining = remaining // size
    if class_weights is not None:
        per_image = per_image * class_weights[labels]
    return per_image.sum()


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    generator: torch.Generator,
    augment: Augment | None,
    device: torch.device,
    *,
    class_weights: np.ndarray | None = None,
    sample_weights: np.ndarray | None = None,
    autocast: bool = False,
    channels_last: bool = False,
    shard: Shard | None = None,
    head_sizes: Sequence[int] = (),
    multilabel: bool = False,
    auxiliary: Auxiliary | None = None,
) -> float:
    """One pass over the training split; returns the mean loss over all its images.

    ``class_weights`` weight the loss, ``sample_weights`` the sampling (see iterate_batches);
    ``autocast`` runs the forward pass in bfloat16 on a GPU; ``channels_last`` feeds NHWC
    tensors, which convolutions on CPU often run faster; ``head_sizes`` (``Target.head_sizes``)
    splits the logits into separately trained heads, and ``multilabel`` trains N×L indicator
    ``labels`` label by label (see :func:`head_loss`). With ``auxiliary`` the model carries a
    training-only head (bps/training/heads.py: the plate adversary, the foci regression) whose loss
    on its targets is added; the returned loss is the labels' alone. With a ``shard`` this process
    trains on its rows of every batch and returns its part of the mean (the parts sum to the mean).
    The loss is summed on the device and read once, so the host never waits for a GPU after each batch.
    """
    model.train()
    weight = torch.as_tensor(class_weights, dtype=torch.float32, device=device) if class_weights is not None else None
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    total = torch.zeros((), dtype=torch.float64, device=device)
    # Batches carry row numbers: a batch's labels and its head's targets are looked up by them.
    all_labels = torch.from_numpy(labels)
    extra = torch.from_numpy(auxiliary.targets) if auxiliary is not None else None
    for batch, rows in iterate_batches(images, np.arange(len(images)), batch_size, generator, augment,
                                       sample_weights, shard):
        batch = to_device(batch, device).contiguous(memory_format=memory_format)
        target = to_device(all_labels[rows], device)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            output = model(batch)
            if auxiliary is None:
                loss = objective = head_loss(output, target, head_sizes, weight, multilabel)
            else:
                logits, head_outputs = output[:, :-auxiliary.outputs], output[:, -auxiliary.outputs:]
                loss = head_loss(logits, target, head_sizes, weight, multilabel)
                objective = loss + auxiliary.loss(head_outputs, to_device(extra[rows], device))
        objective.backward()
        optimizer.step()
        total += loss.detach()
    return total.item() / len(images)


class WeightAverage:
    """An exponential moving average of a network's weights, swapped in to validate and to keep.

    Unseen plates are a new domain, and the average of the weights of many steps sits in a flatter
    minimum than any one step's, which carries over to new domains better (Polyak averaging; SWAD,
    Cha et al. 2021). The decay warms up as (1 + t) / (10 + t) towards ``decay``, so the first steps'
    weights fade out at any training length, and the average spans about the last 1 / (1 - decay)
    steps once training is that long.
    """

    def __init__(self, network: nn.Module, decay: float) -> None:
        self.tensors = [t for t in (*network.parameters(), *network.buffers()) if t.is_floating_point()]
        self.average = [t.detach().clone() for t in self.tensors]
        self.decay, self.steps = decay, 0

    @torch.no_grad()
    def update(self) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for average, tensor in zip(self.average, self.tensors):
            average.lerp_(tensor, 1 - decay)

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The network holds the average inside the block, its own weights again after it."""
        own = [t.detach().clone() for t in self.tensors]
        self._copy(self.average)
        try:
            yield
        finally:
            self._copy(own)

    @torch.no_grad()
    def _copy(self, values: list[torch.Tensor]) -> None:
        for tensor, value in zip(self.tensors, values):
            tensor.copy_(value)


@dataclass(frozen=True)
class Split:
    """The images and labels of one split a run trains or validates on."""

    images: np.ndarray
    labels: np.ndarray
    auxiliary: Auxiliary | None = None  # a training-only head's targets and loss (bps/training/heads.py)


class Logger(Protocol):
    """What :func:`fit` logs through: dvclive's ``Live`` (rank 0) or a silent stand-in (other ranks)."""

    summary: dict

    def log_metric(self, name: str, value: float) -> None: ...

    def next_step(self) -> None: ...


def fit(model: nn.Module, config: TrainParams, target: Target, train: Split, val: Split,
        generator: torch.Generator, device: torch.device, world: World, live: Logger,
        on_better: Callable[[int, dict[str, float]], None]) -> None:
    """Train ``model`` for ``config.epochs`` (or until early stopping), validating on the whole ``val``
    split after every epoch; ``on_better(epoch, metrics)`` runs on every rank when ``config.select_metric``
    improves, and the logger's summary gets that epoch (``best_epoch``) and its scores (``kept``).
    ``model`` may be DDP-wrapped: every rank trains its shard of each batch (``world``).
    With ``config.ema_decay``, the moving average of the weights is what is validated and kept.
    """
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config)
    augment = training_augment(generator, config)
    class_weights, sample_weights = training_weights(train.labels, len(target.classes))
    options = {
        "class_weights": class_weights if config.class_weight == "balanced" else None,
        "sample_weights": sample_weights if config.sampler == "weighted" else None,
        "autocast": config.amp and device.type == "cuda",
        "channels_last": config.channels_last,
        "shard": world.shard,
        "head_sizes": target.head_sizes,
        "multilabel": target.multilabel,
        "auxiliary": train.auxiliary,
    }
    average = WeightAverage(unwrap(model), config.ema_decay) if config.ema_decay > 0 else None
    if average is not None:
        optimizer.register_step_post_hook(lambda *_: average.update())
    stopping = EarlyStopping(config.early_stopping_patience, lower_is_better=config.select_metric == "val_loss")
    quiet = {} if world.is_main else {"disable": True}  # one progress bar, rank 0's
    for epoch in tqdm(range(config.epochs), desc=f"train-{config.model}", unit="epoch", **quiet):
        live.log_metric("lr", optimizer.param_groups[0]["lr"])
        train_loss = train_epoch(model, optimizer, train.images, train.labels, config.batch_size, generator, augment,
                                 device, **options)
        if scheduler is not None:
            scheduler.step()
        with average.swapped_in() if average is not None else nullcontext():
            proba = predict_whole_split(model, val.images, device, world, target.head_sizes, target.multilabel)
            metrics = {"train_loss": sum_over_ranks(train_loss, world, device),
                       **validation_scores(target, val.labels, proba)}
            for name, value in metrics.items():
                live.log_metric(name, value)
            if stopping.improved(metrics[config.select_metric]):
                on_better(epoch, metrics)
                # the summary's other figures are the last epoch's: these are the kept model's
                live.summary["best_epoch"], live.summary["kept"] = epoch, dict(metrics)
        live.next_step()
        if stopping.should_stop:  # every rank saw the same metrics: all stop together
            if world.is_main:
                print(f"early stop after epoch {epoch}: no better {config.select_metric} "
                      f"for {config.early_stopping_patience} epochs")
            break
