"""Real vs simulated crop statistics: ``python -m bps realism [--real FILE] [--images N] [--out FILE]``.

Measures the real crop (Fe 0.82 Gy, 4 h) and N simulated crops of the same condition with the same
functions (``bps.sim.crop_stats``) and prints a Markdown table: the real value, the simulated median
and 10-90 % range, the tolerance, and whether the simulated median is within it. The docs include
the table this command writes with ``--out docs/generated/realism.md``; ``tests/sim/test_render.py``
asserts every row. A developer tool: nothing in the pipeline needs the real file.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from bps.core.files import write_text
from bps.core.params import SyntheticParams
from bps.sim.crop_stats import measure_crop
from bps.sim.render import plan_dataset, simulate_image

REAL_CROP = Path(__file__).resolve().parents[3] / "shared" / "bps-real" / "P242_73665006707-A6_003_013_proj.tif"
CONDITION = ("Fe", 0.82, 4)  # the real crop's condition (plate 242)
# The real dataset's crop sides span 90-256 px (issue 10; meta.csv holds no sizes).
REAL_SIDES_PX = (90, 256)


@dataclass(frozen=True)
class Tolerance:
    """How far the simulated median may be from the real value: relative, or absolute."""

    relative: float = 0.0
    absolute: float = 0.0

    def allows(self, real: float, simulated: float) -> bool:
        return abs(simulated - real) <= max(self.relative * abs(real), self.absolute)

    def __str__(self) -> str:
        return f"±{self.relative:.0%}" if self.relative else f"±{self.absolute:g}"


TOLERANCES = {
    "p1": Tolerance(relative=0.10),
    "p50": Tolerance(relative=0.15),
    "p99": Tolerance(relative=0.15),
    "background_level": Tolerance(relative=0.10),
    "background_sigma": Tolerance(relative=0.20),
    "nucleus_fraction": Tolerance(absolute=0.05),
    "nucleus_level": Tolerance(relative=0.15),
    "focus_peak": Tolerance(relative=0.25),
    "focus_fwhm_px": Tolerance(absolute=1.0),
    "side_px": Tolerance(absolute=20.0),
}


def simulated_stats(images: int, seed: int = 0) -> pd.DataFrame:
    """``bps.sim.crop_stats`` of ``images`` simulated crops of the real crop's condition.

    With every confound off: the simulator's typical plate. Its confounds move plates around that
    (by ~10 % at the defaults); which way the real plate 242 was moved is one draw, not knowable.
    """
    particle, dose, hours = CONDITION
    plan = plan_dataset(images, [hours], seed)
    names = plan[(plan["particle_type"] == particle) & (plan["dose_Gy"] == dose)]["filename"]
    typical = SyntheticParams(seed=seed, batch_effect=0.0, well_effect=0.0, plate_effect=0.0)
    rows = [measure_crop(simulate_image(name, particle, dose, hours, seed, typical)).as_dict() for name in names]
    table = pd.DataFrame(rows)
    table["side_px"] = (table["height"] + table["width"]) / 2
    return table


def compare(real_image: np.ndarray, simulated: pd.DataFrame) -> pd.DataFrame:
    """One row per statistic: real value, simulated median and 10-90 % range, tolerance, verdict."""
    real = measure_crop(real_image).as_dict()
    real["side_px"] = (real["height"] + real["width"]) / 2
    rows = []
    for name, tolerance in TOLERANCES.items():
        values = simulated[name].dropna()
        median = float(values.median())
        low, high = np.percentile(values, [10, 90])
        rows.append(
            {
                "statistic": name,
                "real": real[name],
                "simulated median": median,
                "simulated 10-90 %": f"{low:.4g}-{high:.4g}",
                "tolerance": str(tolerance),
                "within": tolerance.allows(real[name], median),
            }
        )
    sides = pd.concat([simulated["height"], simulated["width"]])
    rows.append(
        {
            "statistic": "side_px range",
            "real": f"{REAL_SIDES_PX[0]}-{REAL_SIDES_PX[1]} (dataset)",
            "simulated median": float(sides.median()),
            "simulated 10-90 %": f"{sides.min()}-{sides.max()} (min-max)",
            "tolerance": "inside",
            "within": bool(sides.min() >= REAL_SIDES_PX[0] and sides.max() <= REAL_SIDES_PX[1]),
        }
    )
    foci = simulated["foci"]
    rows.append(
        {
            "statistic": "foci per nucleus (mean)",
            "real": "1 here; 1.4-1.9 dataset",
            "simulated median": float(foci.mean()),
            "simulated 10-90 %": f"{np.percentile(foci, 10):g}-{np.percentile(foci, 90):g}",
            "tolerance": "1.4-1.9",
            "within": bool(1.4 <= foci.mean() <= 1.9),
        }
    )
    return pd.DataFrame(rows)


def _cell(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown(table: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bps realism", description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=REAL_CROP, help="the real crop (Fe 0.82 Gy, 4 h)")
    parser.add_argument("--images", type=int, default=300, help="simulated crops to measure")
    parser.add_argument("--out", type=Path, help="also write the caption and table to this Markdown file")
    args = parser.parse_args(argv)
    if not args.real.is_file():
        raise SystemExit(f"realism: real crop {args.real} not found (pass --real FILE)")
    table = compare(tifffile.imread(args.real), simulated_stats(args.images))
    text = (f"Real crop {args.real.name} vs {args.images} simulated crops of Fe 0.82 Gy, 4 h (seed 0, confounds off)"
            f"\n\n{markdown(table)}\n")
    print(text, end="")
    if args.out:
        write_text(args.out, text)


if __name__ == "__main__":
    main()
