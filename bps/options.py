"""The names of the choices whose code needs PyTorch: architectures, optimisers, schedulers.

``bps/params.py`` is imported by every stage and must stay free of torch, yet it validates
``train.model``, ``train.optimizer`` and ``train.scheduler``. So the names live here, and the
modules that implement them (``bps/models.py``, ``bps/training.py``) build their registries
with :func:`registry`, which fails at import when a name has no implementation or an
implementation has no name. The other choices are named beside their code in light modules:
targets in ``bps/labels.py``, hours in ``bps/meta.py``.
"""

from __future__ import annotations

from typing import TypeVar

ARCHITECTURES = ("lenet", "cnn", "resnet18", "resnet50")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "step", "cosine", "exponential")

T = TypeVar("T")


def registry(names: tuple[str, ...], **implementations: T) -> dict[str, T]:
    """``implementations`` keyed by ``names``, checked to be exactly those names."""
    if set(implementations) != set(names):
        raise TypeError(
            f"implementations {sorted(implementations)} do not match the option names {sorted(names)} (bps/options.py)"
        )
    return {name: implementations[name] for name in names}
