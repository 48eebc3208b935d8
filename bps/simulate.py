"""An offline simulator of the BPS Microscopy dataset, true enough to teach something.

It writes what the bucket holds: a ``meta.csv`` with the real columns and value sets, and one
Deflate-compressed uint16 TIFF per nucleus, named ``P<plate>_<barcode>-<well>_<field>_<object>
_proj.tif`` with one plate per condition. Calibrated on the real crop in ``shared/bps-real``:
background ~250-400, nucleus ~450-1200 with chromatin texture, foci a few pixels wide peaking
at ~1500-3000, Poisson and read noise, slight blur, bits of neighbouring nuclei at the edges.

The physics that a model can (and cannot) learn:

* X-rays (low LET) deposit dose uniformly, so foci are scattered over the nucleus, about
  ``XRAY_FOCI_PER_GY`` per Gy at 4 h, most of them repaired by 24 h and 48 h.
* Fe ions (high LET) hit a nucleus a few times (Poisson, mean ∝ dose / LET × nuclear area);
  each track leaves several large, bright foci on a straight line, and clustered damage
  is repaired slowly, so tracks persist at 24 h and 48 h. Some nuclei are simply not hit.
* Sham nuclei show only spontaneous foci: their particle label is a coin flip that the image
  cannot show; only per-plate brightness, background and focus differences tell the plates
  apart, as on the real data.
"""

from __future__ import annotations

import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from scipy import ndimage
from tqdm import tqdm

from bps.files import atomic_open
from bps.meta import DOSES_GY

# The real plate (number, barcode) of each condition, so names look exactly like the bucket's.
PLATES: dict[tuple[str, float, int], tuple[int, str]] = {
    ("Fe", 0.82, 4): (242, "73665006707"),
    ("Fe", 0.3, 4): (243, "73665098237"),
    ("Fe", 0.0, 4): (244, "73665165741"),
    ("Fe", 0.82, 24): (248, "73665445941"),
    ("Fe", 0.3, 24): (249, "73665543731"),
    ("Fe", 0.0, 24): (250, "73665642094"),
    ("Fe", 0.82, 48): (251, "73665707362"),
    ("Fe", 0.0, 48): (253, "73666050044"),
    ("X-ray", 0.0, 4): (278, "73668090728"),
    ("X-ray", 0.1, 4): (279, "73668277350"),
    ("X-ray", 1.0, 4): (280, "73668439105"),
    ("X-ray", 0.0, 24): (282, "73668608120"),
    ("X-ray", 0.1, 24): (283, "73668670516"),
    ("X-ray", 1.0, 24): (284, "73668752578"),
    ("X-ray", 0.0, 48): (286, "73668871024"),
    ("X-ray", 0.1, 48): (287, "73668956345"),
    ("X-ray", 1.0, 48): (288, "73669012104"),
}
WELLS = {
    "Fe": ("A6", "A8", "C6", "C7", "C8", "E4", "G3", "G4"),
    "X-ray": ("A7", "C7", "D5", "E1", "E2", "E5", "E6", "F5"),
}
FIELDS_PER_WELL = 40

SPONTANEOUS_FOCI = 1.5
XRAY_FOCI_PER_GY = 20.0
# Fraction of foci still present after repair, by hours post exposure.
XRAY_REMAINING = {4: 1.0, 24: 0.3, 48: 0.12}
FE_REMAINING = {4: 1.0, 24: 0.75, 48: 0.6}
# Fe tracks per nucleus per Gy: fluence (6.24 / LET[keV/µm] per µm² per Gy) × ~120 µm² nucleus,
# for 1 GeV/n Fe at LET ≈ 150 keV/µm.
FE_TRACKS_PER_GY = 6.24 / 150.0 * 120.0
FE_FOCUS_SPACING_PX = 11.0

# TIFF compression tag 32946 (Deflate), as in the bucket.
DEFLATE = 32946


def conditions(hours: list[int] | tuple[int, ...] = (4, 24, 48)) -> list[tuple[str, float, int]]:
    """The real dataset's conditions at the chosen hours (Fe 0.3 Gy at 48 h does not exist)."""
    return [c for c in PLATES if c[2] in hours]


@dataclass(frozen=True)
class PlateLook:
    """Mild, systematic differences between plates: staining, background and focus."""

    brightness: float
    background: float
    blur_sigma: float

    @classmethod
    def for_plate(cls, plate: int) -> PlateLook:
        rng = np.random.default_rng([plate, 7])
        return cls(
            brightness=float(rng.normal(1.0, 0.07)),
            background=float(rng.uniform(270, 360)),
            blur_sigma=float(rng.uniform(0.6, 1.3)),
        )


def _points_in_ellipse(rng: np.random.Generator, n: int, centre, axes, angle: float) -> np.ndarray:
    radius = np.sqrt(rng.uniform(0, 1, n))
    theta = rng.uniform(0, 2 * np.pi, n)
    u, v = radius * np.cos(theta) * axes[0], radius * np.sin(theta) * axes[1]
    cos, sin = np.cos(angle), np.sin(angle)
    return np.stack([centre[0] + u * cos - v * sin, centre[1] + u * sin + v * cos], axis=1)


def _ellipse_radius(yy, xx, centre, axes, angle: float) -> np.ndarray:
    """Normalised elliptical radius: < 1 inside the ellipse."""
    dy, dx = yy - centre[0], xx - centre[1]
    cos, sin = np.cos(angle), np.sin(angle)
    u = dy * cos + dx * sin
    v = -dy * sin + dx * cos
    return np.sqrt((u / axes[0]) ** 2 + (v / axes[1]) ** 2)


def _nucleus(rng, yy, xx, centre, axes, angle, level: float) -> np.ndarray:
    """A soft-edged ellipse with chromatin texture, brighter towards its rim like a DAPI stain."""
    radius = _ellipse_radius(yy, xx, centre, axes, angle)
    body = 1.0 / (1.0 + np.exp((radius - 1.0) * 18.0))
    texture = ndimage.gaussian_filter(rng.normal(0, 1, yy.shape), 3.0)
    texture *= 0.13 / max(texture.std(), 1e-6)
    return body * level * (1.0 + texture + 0.12 * np.clip(radius, 0, 1) ** 2)


def _track_foci(rng, n_tracks: int, centre, axes, angle, remaining: float) -> np.ndarray:
    """Foci strung along straight ion tracks crossing the nucleus at random angles."""
    foci = []
    for start in _points_in_ellipse(rng, n_tracks, centre, axes, angle):
        direction = rng.uniform(0, np.pi)
        length = rng.uniform(0.1, 1.3) * min(axes)
        n = max(2, int(round(length / FE_FOCUS_SPACING_PX)) + 1)
        steps = np.linspace(-length / 2, length / 2, n) + rng.normal(0, 2.0, n)
        points = start + np.outer(steps, [np.sin(direction), np.cos(direction)])
        points += rng.normal(0, 1.2, points.shape)
        foci.append(points[rng.uniform(0, 1, n) < remaining])
    return np.concatenate(foci) if foci else np.empty((0, 2))


def _stamp(shape, points: np.ndarray, peaks: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian spots of the given peak heights: impulses blurred once, not one kernel per spot."""
    impulses = np.zeros(shape)
    rows, cols = np.round(points).astype(int).T
    inside = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
    np.add.at(impulses, (rows[inside], cols[inside]), peaks[inside] * 2 * np.pi * sigma**2)
    return ndimage.gaussian_filter(impulses, sigma)


def render_nucleus(rng: np.random.Generator, particle: str, dose_gy: float, hours: int, look: PlateLook) -> np.ndarray:
    """One nucleus crop as the microscope would record it (uint16, variable size)."""
    height, width = np.clip(rng.normal(150, 28, 2), 90, 256).astype(int)
    yy, xx = np.mgrid[0:height, 0:width].astype(float)
    centre = np.array([height, width]) / 2 + rng.normal(0, 3, 2)
    axes = np.array([height, width]) * rng.uniform(0.34, 0.44, 2)
    angle = rng.uniform(0, np.pi)
    level = look.brightness * rng.uniform(280, 620)
    image = look.background + _nucleus(rng, yy, xx, centre, axes, angle, level)

    for _ in range(rng.poisson(0.8)):  # neighbours cut by the crop's edge
        side = rng.uniform(0, 2 * np.pi)
        where = np.array([height, width]) / 2 + 1.25 * np.array([height, width]) * [np.sin(side), np.cos(side)] / 2
        image += _nucleus(rng, yy, xx, where, axes * rng.uniform(0.8, 1.1, 2), rng.uniform(0, np.pi), level)

    scattered = SPONTANEOUS_FOCI
    n_tracks = 0
    if particle == "X-ray":
        scattered += XRAY_FOCI_PER_GY * dose_gy * XRAY_REMAINING[hours]
    elif dose_gy > 0:
        n_tracks = rng.poisson(FE_TRACKS_PER_GY * dose_gy)
    small = _points_in_ellipse(rng, rng.poisson(scattered), centre, axes * 0.92, angle)
    large = _track_foci(rng, n_tracks, centre, axes * 0.92, angle, FE_REMAINING[hours])
    nucleus_level = level * look.brightness
    image += _stamp(image.shape, small, rng.uniform(1.6, 3.0, len(small)) * nucleus_level, 1.1)
    image += _stamp(image.shape, large, rng.uniform(1.8, 3.4, len(large)) * nucleus_level, 1.6)

    image = ndimage.gaussian_filter(image, look.blur_sigma)
    gain = 1.6  # grey levels per photo-electron: sets the Poisson noise
    image = rng.poisson(np.clip(image, 0, None) / gain) * gain + rng.normal(0, 6, image.shape)
    return np.clip(np.round(image), 0, 65535).astype(np.uint16)


def write_tiff(path: Path, image: np.ndarray) -> None:
    """Write a Deflate-compressed TIFF atomically: readers never see a half-written file."""
    with atomic_open(path) as stream:
        tifffile.imwrite(stream, image, compression=DEFLATE)


def plan_dataset(images_per_condition: int, hours: list[int], seed: int) -> pd.DataFrame:
    """Names and labels for every simulated image, before any pixel is drawn.

    Images are spread over each plate's wells and fields the way the real plates are.
    """
    rows = []
    for particle, dose, hr in conditions(hours):
        plate, barcode = PLATES[(particle, dose, hr)]
        rng = np.random.default_rng([seed, plate])
        wells = rng.choice(WELLS[particle], size=images_per_condition)
        fields = rng.integers(1, FIELDS_PER_WELL + 1, size=images_per_condition)
        taken: set[str] = set()
        for well, field in zip(wells, fields):
            obj = 1
            name = f"P{plate}_{barcode}-{well}_{field:03d}_{obj:03d}_proj.tif"
            while name in taken:
                obj += 1
                name = f"P{plate}_{barcode}-{well}_{field:03d}_{obj:03d}_proj.tif"
            taken.add(name)
            rows.append((name, dose, particle, hr))
    table = pd.DataFrame(rows, columns=["filename", "dose_Gy", "particle_type", "hr_post_exposure"])
    return table.sort_values("filename").reset_index(drop=True)


def simulate_image(filename: str, particle: str, dose_gy: float, hours: int, seed: int) -> np.ndarray:
    """The pixels of one named image: a pure function of its name, labels and the seed."""
    plate = int(filename[1 : filename.index("_")])
    name_key = zlib.crc32(filename.encode())
    rng = np.random.default_rng([seed, plate, name_key])
    if dose_gy not in DOSES_GY[particle]:
        raise ValueError(f"{particle} has no dose {dose_gy} Gy (known: {DOSES_GY[particle]})")
    return render_nucleus(rng, particle, dose_gy, hours, PlateLook.for_plate(plate))


def _write_row(task: tuple[Path, str, float, str, int, int]) -> None:
    folder, filename, dose, particle, hours, seed = task
    write_tiff(folder / filename, simulate_image(filename, particle, dose, hours, seed))


def write_images(folder: Path, table: pd.DataFrame, seed: int, workers: int) -> None:
    """Render and write every image of ``table`` into ``folder``, on ``workers`` processes."""
    folder.mkdir(parents=True, exist_ok=True)
    tasks = [
        (folder, *row, seed)
        for row in table[["filename", "dose_Gy", "particle_type", "hr_post_exposure"]].itertuples(index=False)
    ]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        done = pool.map(_write_row, tasks, chunksize=max(1, len(tasks) // (workers * 8)))
        for _ in tqdm(done, total=len(tasks), desc="simulate", unit="img"):
            pass
