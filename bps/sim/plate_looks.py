"""What each simulated plate looks like: ``python -m bps plate-looks``.

Each condition is one plate, so a plate's look (its batch effect and its own drift: staining,
background, focus blur, chromatin contrast; bps/sim/confounds.py) goes with its particle. When
a seed's draws happen to separate the particles' training plates on one of these, and the
test hour's plates lie the other way, a network that learns the look reads the unseen plates
wrong. This lists the draws (the well effect, which varies within a plate, left out), so a
seed's results can be read beside them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from bps.core.files import write_text
from bps.core.params import SyntheticParams, load_params
from bps.sim.confounds import look_for
from bps.sim.render import PLATES, conditions

COLUMNS = ["plate", "particle", "dose_Gy", "hours", "brightness", "background", "blur_px", "texture"]


def plate_looks(confounds: SyntheticParams, hours: list[int]) -> pd.DataFrame:
    """One row per plate of ``hours``, drawn from ``confounds.seed``: its look as bps.sim.confounds.Look
    without the well effect (brightness, background and texture as factors of the typical value, blur
    in native pixels)."""
    plate_only = confounds.model_copy(update={"well_effect": 0.0})
    rows = []
    for particle, dose, hours_post in conditions(hours):
        plate = PLATES[(particle, dose, hours_post)][0]
        look = look_for(particle, plate, "A1", confounds.seed, plate_only)  # the well is ignored at well_effect 0
        rows.append((f"P{plate}", particle, dose, hours_post, look.brightness, look.background, look.blur,
                     look.texture))
    return pd.DataFrame(rows, columns=COLUMNS).sort_values(["hours", "particle", "dose_Gy"], ignore_index=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bps plate-looks", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="the seed, hours and data.synthetic strengths come from here")
    parser.add_argument("--seed", type=int, help="another seed than the file's")
    parser.add_argument("--plate-effect", type=float, help="another data.synthetic.plate_effect than the file's")
    parser.add_argument("--out", type=Path, help="also write the table to this CSV file")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    overrides = {"seed": args.seed, "plate_effect": args.plate_effect}
    confounds = params.data.synthetic.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    table = plate_looks(confounds, params.data.hours)
    text = table.to_csv(index=False, float_format="%.3f")
    print(text, end="")
    if args.out:
        write_text(args.out, text)


if __name__ == "__main__":
    main()
