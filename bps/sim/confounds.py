"""The nuisances of the real BPS design, each with its own strength: batch, well and plate.

In the real metadata the two particles are two experiment batches (Fe on plates 242-253, X-rays
on plates 278-288) with different well layouts, and a well position recurs on every plate of its
batch (the same animal or strain, [P] Penninckx et al., Radiation Research 2021: 53BP1 foci in
cells of several mouse strains). So three effects, independent of dose:

* ``batch_effect``: staining, background and chromatin contrast shared by every plate of a
  particle. It is confounded with the particle by design: no split of the BPS data removes it.
* ``well_effect``: nuclear size, shape, DNA content and texture of the cells in one well
  position, shared by the same position on every plate of the batch (an animal or strain).
* ``plate_effect``: per-plate drift in staining, background and focus, which a plate-disjoint
  split removes.

Each strength is the standard deviation, as a fraction of the typical value, of the effect on
the quantities it moves (keys ``data.synthetic.batch_effect``, ``well_effect``, ``plate_effect``,
validated in ``bps.core.params.SyntheticParams``); 0 switches the effect off. Every draw comes from the
simulator's seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bps.core.params import SyntheticParams

# Typical values without any effect, calibrated on the real crop with bps.sim.crop_stats.
BACKGROUND_LEVEL = 360.0  # grey levels of the background (the real crop: ~396 with halo, p1 323)
NUCLEUS_LEVEL = 670.0  # median grey level of a nucleus (the real crop: 849)
BLUR_PX = 0.0  # extra focus blur (px, added in quadrature to every focus's σ)

# How strongly one unit of strength moves each quantity, relative to the others (a strength of
# 0.1 moves brightness by ~10 %, background by ~10 %, blur by ~0.5 px, size by ~5 % ...).
_WEIGHTS = {"brightness": 1.0, "background": 1.0, "blur": 5.0, "size": 0.5, "elongation": 1.0, "texture": 2.0}
# Which quantities each effect moves.
_MOVES = {
    "batch": ("brightness", "background", "texture"),
    "well": ("size", "elongation", "brightness", "texture"),
    "plate": ("brightness", "background", "blur", "texture"),
}
_TAGS = {"batch": 1, "well": 2, "plate": 3}
_BATCH = {"Fe": 0, "X-ray": 1}


@dataclass(frozen=True)
class Look:
    """What one well of one plate looks like: the product of its batch, well and plate effects."""

    brightness: float = 1.0  # × NUCLEUS_LEVEL
    background: float = 1.0  # × BACKGROUND_LEVEL
    blur: float = BLUR_PX  # px
    size: float = 1.0  # × nucleus diameter
    elongation: float = 1.0  # × axis ratio − 1
    texture: float = 1.0  # × chromatin contrast


def _shifts(seed: int, effect: str, key: tuple[int, ...], strength: float) -> dict[str, float]:
    """Log-scale shifts of the quantities ``effect`` moves, scaled by weight and strength.

    Wells and plates draw standard normals. The batch effect is a fixed, symmetric offset with
    random signs: Fe moves each quantity by +strength, X-rays by −strength (times its weight),
    so its size does not depend on the luck of two draws.
    """
    if strength == 0:
        return {}
    if effect == "batch":
        signs = np.random.default_rng([seed, _TAGS[effect]]).choice([-1.0, 1.0], len(_WEIGHTS))
        draws = signs * (1.0 if key == (0,) else -1.0)
    else:
        draws = np.random.default_rng([seed, _TAGS[effect], *key]).normal(0, 1, len(_WEIGHTS))
    return {name: strength * _WEIGHTS[name] * z for name, z in zip(_WEIGHTS, draws) if name in _MOVES[effect]}


def look_for(particle: str, plate: int, well: str, seed: int, confounds: SyntheticParams) -> Look:
    """The look of ``well`` on ``plate``: batch, well position and plate effects combined."""
    well_key = (_BATCH[particle], ord(well[0]), int(well[1:]))
    total: dict[str, float] = {}
    for effect, key, strength in (
        ("batch", (_BATCH[particle],), confounds.batch_effect),
        ("well", well_key, confounds.well_effect),
        ("plate", (plate,), confounds.plate_effect),
    ):
        for name, shift in _shifts(seed, effect, key, strength).items():
            total[name] = total.get(name, 0.0) + shift
    return Look(
        brightness=float(np.exp(total.get("brightness", 0.0))),
        background=float(np.exp(total.get("background", 0.0))),
        blur=float(BLUR_PX + abs(total.get("blur", 0.0))),
        size=float(np.exp(total.get("size", 0.0))),
        elongation=float(np.exp(total.get("elongation", 0.0))),
        texture=float(np.exp(total.get("texture", 0.0))),
    )
