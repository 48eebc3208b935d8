"""The names of the choices that params.yaml offers, defined once: hours, targets, networks...

``bps/core/params.py`` validates them, and is imported by every stage, so it must import neither
torch nor the code behind each choice (a stage that imported ``bps/targets/labels.py`` only to learn
the target names would depend on it, and DVC would re-run it when a class name changed). So
the names live here, in a module with no numbers in it, and each module that implements a
choice (``bps/targets/labels.py``: targets, ``bps/data/meta.py``: hours, ``bps/models/networks.py``: architectures,
``bps/training/loop.py``: optimisers and schedulers) builds its table with :func:`registry`, which
fails at import when a name has no implementation or an implementation no name.
"""

from __future__ import annotations

from typing import TypeVar

HOURS = (4, 24, 48)  # hours post exposure in the BPS dataset
BPS_TARGETS = ("particle", "particle_dose", "condition", "particle+dose")
LAYOUT_TARGET = "labels"  # data.source layout: the layout's own labels (data.layout.label_column)
TARGETS = (*BPS_TARGETS, LAYOUT_TARGET)
THRESHOLDS = ("global", "per_label")  # task.threshold: how a multi-label model's decision thresholds are chosen
ARCHITECTURES = ("lenet", "lenet_pool", "lenet_pool_s2", "cnn", "resnet18", "resnet50")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "step", "cosine", "exponential")
SOURCES = ("synthetic", "s3", "layout")  # layout: a multi-channel dataset described by data.layout
BPS_GROUPS = ("well", "field", "none")  # split.group_by for the BPS sources
LABEL_SEPARATORS = (" ", "|")  # data.layout.label_separator (null: one label per sample)
CONTROLS = ("exclude", "class")  # data.layout.controls: drop control rows, or keep them as class "control"

T = TypeVar("T")


def registry(names: tuple[str, ...], **implementations: T) -> dict[str, T]:
    """``implementations`` keyed by ``names``, checked to be exactly those names."""
    if set(implementations) != set(names):
        raise TypeError(
            f"implementations {sorted(implementations)} do not match the option names {sorted(names)}"
            " (bps/core/options.py)"
        )
    return {name: implementations[name] for name in names}
