"""Targets → class names, class indices and attribute sets: defined once, used by every model.

Targets (``task.target``):

* ``particle``: Fe, X-ray. Sham images keep their plate's particle label, as in the study,
  although nothing irradiated them: expect them near chance.
* ``particle_dose``: the study's six (particle, dose) classes, sham included per particle.
* ``condition``: sham (dose 0, whatever the particle) and the four irradiated (particle, dose)
  classes: the biologically meaningful version.
* ``particle+dose``: two heads trained jointly, ``particle`` (Fe, X-ray) and ``dose`` level
  (sham, low, high), so particle and dose are each scored on their own. Its labels are still one
  index per image, into the same six joint classes as ``particle_dose`` (particle-major); the
  model's outputs are the heads' classes side by side (2 + 3 logits), softmaxed per head.
  Dose *level*, not Gy: the two series differ (Fe 0.3/0.82, X-ray 0.1/1.0 Gy), and the level is
  what is comparable across particles.

``labels`` (``data.source: layout`` only): the layout's own labels, read from the ``label``
column of its tables; the classes are those the split found (data/split/summary.json). With
``data.layout.label_separator`` set a sample carries any number of them (multi-label: one
sigmoid per label, an N×L indicator matrix per split), else exactly one (RxRx1's siRNAs).

Attributes, for the set-based metrics (Hamming loss, Jaccard): each class asserts a set of
attributes from ``Fe, X-ray`` (particle) and ``sham, low, high`` (dose level: Fe 0.3 / X-ray
0.1 Gy are low, Fe 0.82 / X-ray 1.0 Gy high). ``Fe 0.82 Gy`` is {Fe, high}, ``sham`` under
``condition`` is {sham}, ``X-ray`` under ``particle`` is {X-ray}. A target's indicator columns
are the attributes its classes use, so a ``particle`` model is not credited for dose bits it
never predicts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bps.core import options
from bps.core.params import Params
from bps.core.paths import SPLIT_SUMMARY
from bps.data.layouts.meta import LABEL
from bps.data.meta import DOSES_GY
from bps.targets.multilabel import label_matrix

ATTRIBUTES = ("Fe", "X-ray", "sham", "low", "high")
# A training label that names no class: the loss pulls the image towards equal odds of every class
# (``train.shams: uniform`` gives it to the shams under ``particle``; bps.training.loop.head_loss).
EVEN_ODDS = -1
DOSE_LEVELS = ("sham", "low", "high")


def dose_level(particle: str, dose_gy: float) -> str:
    """sham, low or high: the position of the dose in its particle's dose series."""
    doses = DOSES_GY[particle]
    index = int(np.argmin([abs(dose_gy - d) for d in doses]))
    return DOSE_LEVELS[index]


def _dose_name(particle: str, level: str) -> str:
    return f"{particle} {DOSES_GY[particle][DOSE_LEVELS.index(level)]:g} Gy"


@dataclass(frozen=True)
class Target:
    """A classification target: its classes, and how a metadata row maps to one.

    ``parts`` are the heads of a multi-head target (each itself a one-head Target); a one-head
    target is its own single head, one softmax over all its classes. ``separator`` (a layout's
    multi-label target only) splits a ``label`` text into its labels.
    """

    name: str
    classes: tuple[str, ...]
    attributes: dict[str, frozenset[str]]
    parts: tuple[Target, ...] = ()
    separator: str | None = None
    multilabel: bool = False  # each output is one label's own yes/no (sigmoids); labels are N×L indicators

    @property
    def heads(self) -> tuple[Target, ...]:
        return self.parts or (self,)

    @property
    def head_sizes(self) -> tuple[int, ...]:
        return tuple(len(head.classes) for head in self.heads)

    @property
    def outputs(self) -> tuple[str, ...]:
        """What the model outputs, in order: its classes, or every head's classes side by side."""
        return tuple(name for head in self.heads for name in head.classes)

    def split(self, outputs: np.ndarray) -> list[np.ndarray]:
        """Per-output columns (N × outputs) → one N × classes block per head."""
        return np.split(outputs, np.cumsum(self.head_sizes)[:-1], axis=1)

    def head_labels(self, class_indices: np.ndarray) -> tuple[np.ndarray, ...]:
        """Joint class indices → each head's class index (the particle and the dose level)."""
        return np.unravel_index(np.asarray(class_indices), self.head_sizes)

    def predict(self, proba: np.ndarray) -> np.ndarray:
        """Predicted class index per row: the argmax, or for several heads each head's argmax, joined."""
        if not self.parts:
            return proba.argmax(axis=1)
        return np.ravel_multi_index([block.argmax(axis=1) for block in self.split(proba)], self.head_sizes)

    def marginals(self, joint_proba: np.ndarray) -> np.ndarray:
        """Probabilities over the joint classes → per-head probabilities (a one-head target: unchanged).

        How a model with one softmax over the joint classes (the scikit-learn MLP) is scored as heads.
        """
        if not self.parts:
            return joint_proba
        cube = joint_proba.reshape(len(joint_proba), *self.head_sizes)
        axes = range(1, cube.ndim)
        return np.concatenate([cube.sum(axis=tuple(a for a in axes if a != axis)) for axis in axes], axis=1)

    def joint(self, outputs: np.ndarray) -> np.ndarray:
        """Per-output probabilities → probabilities over the joint classes (a one-head target: unchanged).

        The heads are trained as independent softmaxes, so the joint class's probability is the
        product of its heads' (its argmax is :meth:`predict`): what calibration and per-image losses use.
        """
        if not self.parts:
            return outputs
        joint = np.ones((len(outputs), 1))
        for block in self.split(outputs):
            joint = (joint[:, :, None] * block[:, None, :]).reshape(len(outputs), -1)
        return joint

    def class_of(self, particle: str, dose_gy: float) -> str:
        level = dose_level(particle, dose_gy)
        if self.name == "particle":
            return particle
        if self.name == "condition" and level == "sham":
            return "sham"
        return _dose_name(particle, level)

    def encode(self, table: pd.DataFrame) -> np.ndarray:
        """Class index of every row of a metadata table (``particle_type``, ``dose_Gy``); for the
        layout target, of its ``label`` column (multi-label: the N×L uint8 indicator matrix)."""
        index = {name: i for i, name in enumerate(self.classes)}
        if self.name == options.LAYOUT_TARGET:
            values = table[LABEL].fillna("").astype(str).tolist()
            if self.multilabel:
                return label_matrix(values, self.classes, self.separator)
            unknown = sorted(set(values) - set(index))
            if unknown:
                raise ValueError(f"unknown label {unknown[0]!r} (allowed: {', '.join(self.classes)})")
            return np.array([index[value] for value in values], dtype=np.int64)
        return np.array(
            [index[self.class_of(p, d)] for p, d in zip(table["particle_type"], table["dose_Gy"])],
            dtype=np.int64,
        )

    @property
    def attribute_columns(self) -> tuple[str, ...]:
        used = set().union(*self.attributes.values())
        if not used <= set(ATTRIBUTES):  # a layout's classes are their own attributes
            return self.classes
        return tuple(a for a in ATTRIBUTES if a in used)

    def indicators(self, class_indices: np.ndarray) -> np.ndarray:
        """Multi-hot attribute matrix (n × attributes used by this target)."""
        columns = self.attribute_columns
        table = np.array([[a in self.attributes[c] for a in columns] for c in self.classes], dtype=np.int8)
        return table[np.asarray(class_indices)]


def _particle() -> dict[str, frozenset[str]]:
    return {particle: frozenset({particle}) for particle in DOSES_GY}


def _particle_dose() -> dict[str, frozenset[str]]:
    return {_dose_name(p, level): frozenset({p, level}) for p in DOSES_GY for level in DOSE_LEVELS}


def _condition() -> dict[str, frozenset[str]]:
    classes = {"sham": frozenset({"sham"})}
    return classes | {_dose_name(p, level): frozenset({p, level}) for p in DOSES_GY for level in DOSE_LEVELS[1:]}


# Keyed by the names in bps.core.options, which params validation lists. ``particle+dose`` has the six
# joint classes of ``particle_dose``; get_target gives it its two heads.
_CLASSES = options.registry(
    options.BPS_TARGETS, particle=_particle, particle_dose=_particle_dose, condition=_condition,
    **{"particle+dose": _particle_dose},
)
TARGET_NAMES = (*_CLASSES, options.LAYOUT_TARGET)
DOSE_HEAD = Target("dose", DOSE_LEVELS, {level: frozenset({level}) for level in DOSE_LEVELS})


def layout_target(classes: list[str], separator: str | None, multilabel: bool | None = None) -> Target:
    """A layout's own labels as a target: multi-label when its labels have a ``separator`` (a model
    card, which keeps no separator, says ``multilabel`` itself)."""
    multilabel = separator is not None if multilabel is None else multilabel
    return Target(options.LAYOUT_TARGET, tuple(classes), {name: frozenset({name}) for name in classes},
                  separator=separator, multilabel=multilabel)


def task_target(params: Params) -> Target:
    """The target ``task.target`` names; ``labels`` takes its classes from data/split/summary.json."""
    if params.task.target != options.LAYOUT_TARGET:
        return get_target(params.task.target)
    classes = json.loads(SPLIT_SUMMARY.read_text())["classes"]
    return layout_target(classes, params.data.layout.label_separator)


def get_target(name: str) -> Target:
    """The BPS :class:`Target` called ``name`` (one of :data:`TARGET_NAMES` but ``labels``: see
    :func:`task_target`)."""
    if name not in _CLASSES:
        raise ValueError(f"unknown target {name!r} (allowed: {list(TARGET_NAMES)})")
    classes = _CLASSES[name]()
    parts = (get_target("particle"), DOSE_HEAD) if name == "particle+dose" else ()
    return Target(name, tuple(classes), classes, parts)
