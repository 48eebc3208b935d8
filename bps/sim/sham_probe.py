"""How much of the simulated confounds a split lets through: ``python -m bps sham-probe``.

Sham nuclei carry no physics of their particle: Fe shams and X-ray shams differ only by the
confounds (batch, well, plate). A 15-nearest-neighbour classifier on five appearance features of
each sham crop (background and nucleus levels, nucleus area, crop side, texture) tries to tell Fe
shams from X-ray shams; its test accuracy above 0.5 is what a split leaks. Nearest neighbours,
because leakage is memorised look-alikes: a plate's nuclei resemble each other.

* ``well`` split: within every sham plate, half of the wells train and half test (the pipeline's
  grouping). Plate drift, batch and well effects can all leak.
* ``plate`` split: one time point's sham plates (one Fe, one X-ray) are held out, the other two
  time points' train; averaged over the three. Plate drift cannot leak; the batch effect still
  can (it is shared by every plate of a particle), and so can the well effect (a well position
  recurs on every plate of its batch). No split of the BPS design removes those two.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bps.core.files import write_text
from bps.core.params import SyntheticParams
from bps.data.meta import with_groups
from bps.sim.render import plan_dataset, simulate_image

FEATURES = ["background", "nucleus", "area", "side", "texture"]


def appearance(image: np.ndarray) -> dict[str, float]:
    """Five cheap appearance features: background and nucleus levels, nucleus area, crop side, texture."""
    values = image.astype(float)
    background, nucleus = np.percentile(values, [10, 90])
    inside = values > (background + nucleus) / 2
    residual = values - ndimage.gaussian_filter(values, 1.0)
    return {
        "background": background,
        "nucleus": nucleus,
        "area": float(inside.sum()),
        "side": (image.shape[0] + image.shape[1]) / 2,
        "texture": float(residual[inside].std() / nucleus) if inside.any() else 0.0,
    }


def sham_features(images_per_plate: int, confounds: SyntheticParams) -> pd.DataFrame:
    """Appearance features of simulated sham crops, with their plate, well and hour."""
    plan = with_groups(plan_dataset(images_per_plate, [4, 24, 48], confounds.seed))
    plan = plan[plan["dose_Gy"] == 0.0].reset_index(drop=True)
    rows = []
    for name, particle, hours in plan[["filename", "particle_type", "hr_post_exposure"]].itertuples(index=False):
        rows.append(appearance(simulate_image(name, particle, 0.0, hours, confounds.seed, confounds)))
    return pd.concat([plan, pd.DataFrame(rows)[FEATURES]], axis=1)


def _accuracy(train: pd.DataFrame, test: pd.DataFrame) -> float:
    model = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=15))
    model.fit(train[FEATURES], train["particle_type"])
    return float((model.predict(test[FEATURES]) == test["particle_type"]).mean())


def well_split_accuracy(table: pd.DataFrame, seed: int = 0, repeats: int = 3) -> float:
    """Mean accuracy over ``repeats`` random halvings of every plate's wells."""
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(repeats):
        test_wells = set()
        for plate, rows in table.groupby("plate"):
            wells = rng.permutation(sorted(rows["well"].unique()))
            test_wells |= {(plate, well) for well in wells[: len(wells) // 2]}
        in_test = np.array([(plate, well) in test_wells for plate, well in zip(table["plate"], table["well"])])
        scores.append(_accuracy(table[~in_test], table[in_test]))
    return float(np.mean(scores))


def plate_split_accuracy(table: pd.DataFrame) -> float:
    """Mean accuracy with each time point's sham plates held out in turn."""
    hours = table["hr_post_exposure"]
    return float(np.mean([_accuracy(table[hours != held], table[hours == held]) for held in sorted(hours.unique())]))


def probe(images_per_plate: int, confounds: SyntheticParams) -> dict[str, float]:
    """Sham-vs-sham accuracy under the well split and the plate-disjoint split."""
    table = sham_features(images_per_plate, confounds)
    return {"well_split": well_split_accuracy(table), "plate_split": plate_split_accuracy(table)}


SETTINGS = {
    "defaults": {},
    "all off": {"batch_effect": 0.0, "well_effect": 0.0, "plate_effect": 0.0},
    "plate only": {"batch_effect": 0.0, "well_effect": 0.0},
    "batch only": {"well_effect": 0.0, "plate_effect": 0.0},
    "well only": {"batch_effect": 0.0, "plate_effect": 0.0},
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bps sham-probe", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=120, help="simulated images per sham plate")
    parser.add_argument("--seeds", type=int, default=3, help="simulator seeds to average over (0, 1, ...)")
    parser.add_argument("--out", type=Path, help="also write the caption and table to this Markdown file")
    args = parser.parse_args(argv)
    lines = [f"Fe-sham vs X-ray-sham accuracy, {args.images} images per plate, mean over seeds 0-{args.seeds - 1}", "",
             "| confounds | well split | plate-disjoint split |", "|---|---|---|"]
    for label, overrides in SETTINGS.items():
        results = [probe(args.images, SyntheticParams(seed=seed, **overrides)) for seed in range(args.seeds)]
        well = [r["well_split"] for r in results]
        plate = [r["plate_split"] for r in results]
        lines.append(
            f"| {label} | {np.mean(well):.2f} (seeds: {' '.join(f'{v:.2f}' for v in well)}) "
            f"| {np.mean(plate):.2f} (seeds: {' '.join(f'{v:.2f}' for v in plate)}) |"
        )
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        write_text(args.out, text)

if __name__ == "__main__":
    main()
