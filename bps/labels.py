"""Targets → class names, class indices and attribute sets: defined once, used by every model.

Targets (``task.target``):

* ``particle``: Fe, X-ray. Sham images keep their plate's particle label, as in the study,
  although nothing irradiated them: expect them near chance.
* ``particle_dose``: the study's six (particle, dose) classes, sham included per particle.
* ``condition``: sham (dose 0, whatever the particle) and the four irradiated (particle, dose)
  classes: the biologically meaningful version.

Attributes, for the set-based metrics (Hamming loss, Jaccard): each class asserts a set of
attributes from ``Fe, X-ray`` (particle) and ``sham, low, high`` (dose level: Fe 0.3 / X-ray
0.1 Gy are low, Fe 0.82 / X-ray 1.0 Gy high). ``Fe 0.82 Gy`` is {Fe, high}, ``sham`` under
``condition`` is {sham}, ``X-ray`` under ``particle`` is {X-ray}. A target's indicator columns
are the attributes its classes use, so a ``particle`` model is not credited for dose bits it
never predicts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bps import options
from bps.meta import DOSES_GY

ATTRIBUTES = ("Fe", "X-ray", "sham", "low", "high")
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
    """A classification target: its classes, and how a metadata row maps to one."""

    name: str
    classes: tuple[str, ...]
    attributes: dict[str, frozenset[str]]

    def class_of(self, particle: str, dose_gy: float) -> str:
        level = dose_level(particle, dose_gy)
        if self.name == "particle":
            return particle
        if self.name == "condition" and level == "sham":
            return "sham"
        return _dose_name(particle, level)

    def encode(self, table: pd.DataFrame) -> np.ndarray:
        """Class index of every row of a metadata table (``particle_type``, ``dose_Gy``)."""
        index = {name: i for i, name in enumerate(self.classes)}
        return np.array(
            [index[self.class_of(p, d)] for p, d in zip(table["particle_type"], table["dose_Gy"])],
            dtype=np.int64,
        )

    @property
    def attribute_columns(self) -> tuple[str, ...]:
        used = set().union(*self.attributes.values())
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


# Keyed by the names in bps.options, which params validation lists.
_CLASSES = options.registry(options.TARGETS, particle=_particle, particle_dose=_particle_dose, condition=_condition)
TARGET_NAMES = tuple(_CLASSES)


def get_target(name: str) -> Target:
    """The :class:`Target` called ``name`` (``particle``, ``particle_dose`` or ``condition``)."""
    if name not in _CLASSES:
        raise ValueError(f"unknown target {name!r} (allowed: {list(TARGET_NAMES)})")
    classes = _CLASSES[name]()
    return Target(name, tuple(classes), classes)
