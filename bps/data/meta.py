"""The BPS ``meta.csv`` table: its schema, its file-name pattern, validation and filtering.

One table describes every image, whether it came from S3 or from the simulator, so every
later stage reads the same columns and can trust them.
"""

from __future__ import annotations

import io
import re
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from bps.core import options
from bps.core.errors import PipelineError

COLUMNS = ("filename", "dose_Gy", "particle_type", "hr_post_exposure")
DOSES_GY = {"Fe": (0.0, 0.3, 0.82), "X-ray": (0.0, 0.1, 1.0)}
PARTICLES = tuple(DOSES_GY)
HOURS = options.HOURS
CONDITION_COLUMNS = ["particle_type", "dose_Gy", "hr_post_exposure"]

# P242_73665006707-A6_003_013_proj.tif: plate, barcode, well, field, object.
FILENAME_PATTERN = re.compile(
    r"P(?P<plate>\d+)_(?P<barcode>\d+)-(?P<well>[A-Z]+\d+)_(?P<field>\d+)_(?P<object>\d+)_proj\.tiff?"
)


class MetaError(PipelineError, ValueError):
    """meta.csv does not describe a usable BPS dataset."""


def check_safe_name(filename: str) -> None:
    """Refuse names that would write outside the download folder (``../x.tif``, ``/etc/x``)."""
    path = PurePosixPath(filename)
    if (
        not filename
        or path.is_absolute()
        or "\\" in filename
        or ".." in path.parts
        or re.match(r"^[A-Za-z]:", filename)
        or path.name != filename
    ):
        raise MetaError(f"meta.csv: unsafe file name {filename!r}: must be a plain file name")


def _row_error(row_index: int, message: str) -> MetaError:
    # +2: one for the header line, one because people count lines from 1.
    return MetaError(f"meta.csv line {row_index + 2}: {message}")


def validate_meta(table: pd.DataFrame) -> pd.DataFrame:
    """Check columns, value sets, names and duplicates; return a typed copy.

    Raises :class:`MetaError` naming the first offending column or row.
    """
    missing = [column for column in COLUMNS if column not in table.columns]
    if missing:
        raise MetaError(f"meta.csv: missing column(s) {missing}; expected {list(COLUMNS)}")
    table = table.loc[:, list(COLUMNS)].copy()
    names = table["filename"]
    not_text = ~names.map(lambda name: isinstance(name, str) and name != "")
    if not_text.any():
        raise _row_error(_first(not_text), f"file name is empty or not text ({names[not_text].iloc[0]!r})")
    for index, name in enumerate(names):
        try:
            check_safe_name(name)
        except MetaError as error:
            raise _row_error(index, str(error).removeprefix("meta.csv: ")) from None
    unknown = ~table["particle_type"].isin(PARTICLES)
    if unknown.any():
        raise _row_error(
            _first(unknown),
            f"unknown particle_type {table['particle_type'][unknown].iloc[0]!r} (allowed: {list(PARTICLES)})",
        )
    dose = pd.to_numeric(table["dose_Gy"], errors="coerce")
    hours = pd.to_numeric(table["hr_post_exposure"], errors="coerce")
    known_dose = pd.Series(False, index=table.index)
    for particle, doses in DOSES_GY.items():
        is_particle = table["particle_type"] == particle
        known_dose |= is_particle & np.isclose(dose.to_numpy()[:, None], doses).any(axis=1)
    if not known_dose.all():
        bad = _first(~known_dose)
        particle = table["particle_type"].iloc[bad]
        raise _row_error(
            bad,
            f"dose_Gy {table['dose_Gy'].tolist()[bad]!r} is not a known {particle} dose "
            f"(allowed: {list(DOSES_GY[particle])})",
        )
    unknown_hours = ~hours.isin(HOURS)
    if unknown_hours.any():
        raise _row_error(
            _first(unknown_hours),
            f"hr_post_exposure {table['hr_post_exposure'][unknown_hours].tolist()[0]!r} is not one of {list(HOURS)}",
        )
    duplicated = names.duplicated(keep="first")
    if duplicated.any():
        raise _row_error(_first(duplicated), f"duplicated file name {names[duplicated].iloc[0]!r}")
    # Snap doses to the canonical values so 0.30000001 and 0.3 are one condition.
    table["dose_Gy"] = [min(DOSES_GY[p], key=lambda d: abs(d - x)) for p, x in zip(table["particle_type"], dose)]
    table["hr_post_exposure"] = hours.astype(int)
    return table.reset_index(drop=True)


def _first(mask: pd.Series) -> int:
    return int(np.flatnonzero(mask.to_numpy())[0])


def read_meta(source: str | bytes | io.IOBase) -> pd.DataFrame:
    """Read and validate a meta.csv from a path, bytes or file object."""
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        table = pd.read_csv(source, dtype={"filename": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise MetaError(f"meta.csv: not a readable CSV table ({error})") from None
    return validate_meta(table)


def with_groups(table: pd.DataFrame) -> pd.DataFrame:
    """Add plate, well and field columns parsed from the file names.

    Wells and fields are only unique within a plate, so the group keys carry the plate.
    """
    parts = table["filename"].str.extract(FILENAME_PATTERN)
    unparsed = parts["plate"].isna()
    if unparsed.any():
        first = _first(unparsed)
        raise _row_error(
            first,
            f"file name {table['filename'].iloc[first]!r} does not match "
            "P<plate>_<barcode>-<well>_<field>_<object>_proj.tif",
        )
    table = table.copy()
    table["plate"] = "P" + parts["plate"]
    table["well"] = table["plate"] + "-" + parts["well"]
    table["field"] = table["well"] + "_" + parts["field"]
    return table


def select_rows(table: pd.DataFrame, hours: list[int], max_per_condition: int | None, seed: int) -> pd.DataFrame:
    """Keep the chosen hours and at most ``max_per_condition`` rows per condition.

    The sample is reproducible for a seed and does not depend on the table's row order. A
    selection of no rows is an error: the download stage would otherwise prune every local file.
    """
    if table.empty:
        raise MetaError("meta.csv lists no images (only a header?): nothing to download; data/raw is left as it is")
    chosen = table[table["hr_post_exposure"].isin(hours)].sort_values("filename")
    if chosen.empty:
        present = sorted(set(table["hr_post_exposure"]))
        raise MetaError(
            f"data.hours {list(hours)} selects none of the {len(table)} images in meta.csv, whose hours are "
            f"{present}: set data.hours to some of those; data/raw is left as it is"
        )
    if max_per_condition is not None:
        # Not groupby().apply(): pandas 3 drops the grouping columns from what apply returns.
        samples = [
            rows.sample(n=min(len(rows), max_per_condition), random_state=seed)
            for _, rows in chosen.groupby(CONDITION_COLUMNS)
        ]
        chosen = pd.concat(samples) if samples else chosen
    return chosen.sort_values("filename").reset_index(drop=True)
