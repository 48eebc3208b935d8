"""How many detectable foci a simulated nucleus shows, and how they look, by particle, dose and time.

The counts are *detectable* foci at the BPS resolution, not DSBs: several breaks close together
merge into one focus, and a model can only learn what shows. Sources, per constant:

* [P] Penninckx et al., Radiation Research 2021, the BPS dataset's publication (NSRL beam,
  doses, time points, 53BP1 foci in mouse cells, slower repair after high-LET exposure).
* [I10] The foci counts that a public analysis measured on the whole real dataset, as quoted in
  this project's issue 10: mean detectable foci per nucleus ≈ 0.3-0.8 in shams, ≈ 1.4-1.9 for
  Fe 0.82 Gy at 4 h, ≈ 1.8-2.6 for X-ray 1 Gy at 4 h, fewer at 24-48 h.
* [R] The real crop ``shared/bps-real/P242_73665006707-A6_003_013_proj.tif`` (Fe 0.82 Gy, 4 h),
  measured with ``bps.sim.crop_stats``: one Fe focus, FWHM ≈ 5 px, peak ≈ 2.4× the nucleus level.
"""

from __future__ import annotations

import math

import numpy as np

# --- spontaneous foci -------------------------------------------------------------------------
# Mean detectable foci in an unirradiated nucleus: the middle of [I10]'s sham range 0.3-0.8.
SPONTANEOUS_FOCI = 0.5

# --- X-rays (low LET) --------------------------------------------------------------------------
# Detectable induced foci at 4 h follow Y(D) = XRAY_SATURATION × (1 − exp(−D / XRAY_SATURATION_GY)):
# linear at low dose, saturating as breaks begin to share a focus at this resolution [I10: 1 Gy
# shows only ~1.4-2.1 induced foci over sham]. 3.1 × (1 − e⁻¹) = 1.96 induced at 1 Gy, 2.46 in all,
# of which bps.sim.crop_stats counts ~2.2 (foci closer than 3 px merge): the middle of [I10]'s 1.8-2.6;
# 0.3 at 0.1 Gy.
XRAY_SATURATION = 3.1
XRAY_SATURATION_GY = 1.0
# Fraction of 4 h foci left later: low-LET breaks are mostly rejoined within a day [P; I10 "falling
# by 24-48 h"].
XRAY_REMAINING = {4: 1.0, 24: 0.3, 48: 0.12}

# --- Fe ions (high LET) ------------------------------------------------------------------------
# The BPS beam: 600 MeV/n ⁵⁶Fe at NASA's Space Radiation Laboratory, LET ≈ 170 keV/µm [P].
FE_LET_KEV_PER_UM = 170.0
# Fluence per Gy for a beam of that LET: 1 Gy = 6.24 keV/µm³ in water (1 J/kg = 6.24e15 eV/kg at
# ρ = 1 g/cm³), so tracks per µm² per Gy = 6.24 / LET.
FE_TRACKS_PER_UM2_PER_GY = 6.24 / FE_LET_KEV_PER_UM
# Area of an average BPS nucleus: ~120 µm² for mouse fibroblast-sized nuclei (diameter ~12 µm) [P].
NUCLEUS_AREA_UM2 = 120.0
# The beam hits the monolayer perpendicularly, so a track is a line along z and its damage shows as
# ONE focus in the maximum projection [R]. Tracks crossing the nucleus's thin rim, or two tracks
# within one focus's width, are not seen: the fraction of tracks that make a detectable focus is
# set so that Fe 0.82 Gy at 4 h shows 0.5 + 1.08 = 1.58 foci, counted as ~1.65 by bps.sim.crop_stats: the
# middle of [I10]'s 1.4-1.9 (0.0367 tracks/µm²/Gy × 0.82 Gy × 120 µm² = 3.6 tracks, 30 % seen).
FE_DETECTED_FRACTION = 0.30
# Clustered high-LET damage is repaired slowly: most Fe foci persist to 24 h and 48 h [P].
FE_REMAINING = {4: 1.0, 24: 0.75, 48: 0.6}

# --- how foci look -----------------------------------------------------------------------------
# Gaussian σ (px) and peak height over the nucleus (× the nucleus level). Fe: FWHM ≈ 4.6-5 px and
# peak ≈ 1.5-2.5× nucleus [R], so σ ≈ 1.7-2.2 px; X-ray and spontaneous foci: smaller and dimmer
# (a few breaks, not a track's cluster), yet above the detection threshold of bps.sim.crop_stats.
FE_FOCUS_SIGMA_PX = (1.7, 2.2)
FE_FOCUS_HEIGHT = (1.2, 2.2)
SMALL_FOCUS_SIGMA_PX = (1.0, 1.3)
SMALL_FOCUS_HEIGHT = (1.0, 1.4)


def mean_foci(particle: str, dose_gy: float, hours: int, area_ratio: float = 1.0) -> tuple[float, float]:
    """(small foci, Fe-track foci) expected in a nucleus ``area_ratio`` times the average area."""
    small = SPONTANEOUS_FOCI
    tracks = 0.0
    if particle == "X-ray":
        small += XRAY_SATURATION * (1 - math.exp(-dose_gy / XRAY_SATURATION_GY)) * XRAY_REMAINING[hours]
    else:
        hits = FE_TRACKS_PER_UM2_PER_GY * dose_gy * NUCLEUS_AREA_UM2 * area_ratio
        tracks = hits * FE_DETECTED_FRACTION * FE_REMAINING[hours]
    return small, tracks


def draw_foci(
    rng: np.random.Generator, particle: str, dose_gy: float, hours: int, area_ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """(σ px, height × nucleus level) of every focus of one nucleus: small foci first, then tracks."""
    small_mean, track_mean = mean_foci(particle, dose_gy, hours, area_ratio)
    n_small, n_tracks = rng.poisson(small_mean), rng.poisson(track_mean)
    sigmas = np.concatenate([rng.uniform(*SMALL_FOCUS_SIGMA_PX, n_small), rng.uniform(*FE_FOCUS_SIGMA_PX, n_tracks)])
    heights = np.concatenate([rng.uniform(*SMALL_FOCUS_HEIGHT, n_small), rng.uniform(*FE_FOCUS_HEIGHT, n_tracks)])
    return sigmas, heights
