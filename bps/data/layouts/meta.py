"""A multi-channel dataset's metadata (``data.source: layout``) as one normalised table.

HPA, RxRx1 and their kind name samples, labels and channel files each in their own way;
``data.layout`` says how, and :func:`normalise` turns the metadata CSV into the one table that
the download writes as ``data/raw/meta.csv`` and split and preprocess read. One row per sample:

* ``sample``: the ``id_columns`` values joined by ``_`` (unique: an HPA ``Id``; RxRx1 ``well_id`` + ``site``)
* the ``group_columns``, as in the metadata (strings), for the grouped split
* ``label``: the label column's raw text (``"0 25"``, ``"s21721"``); split it with :func:`split_labels`
* ``is_control``: the ``control_column`` holds one of ``control_values``
* ``file_<channel>``, one per channel in ``channels`` order: the file's path relative to the
  root, which is also its path below data/raw/
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import pandas as pd

from bps.core.errors import PipelineError
from bps.core.params import LayoutParams, template_fields

SAMPLE = "sample"
LABEL = "label"
IS_CONTROL = "is_control"
FILE_PREFIX = "file_"
CONTROL_CLASS = "control"  # the class of control rows under data.layout.controls: class


class LayoutError(PipelineError, ValueError):
    """The metadata does not fit ``data.layout``: the message names the column, row or file."""


def file_column(channel: str) -> str:
    return f"{FILE_PREFIX}{channel}"


def channel_columns(table: pd.DataFrame) -> list[str]:
    """The ``file_<channel>`` columns of a normalised table, in channel order."""
    return [column for column in table.columns if column.startswith(FILE_PREFIX)]


def required_columns(layout: LayoutParams) -> dict[str, str]:
    """Every metadata column the layout names, with the key that names it (first one wins)."""
    needed: dict[str, str] = {}
    for name in template_fields(layout.file_template):
        if name != "channel":
            needed.setdefault(name, f"file_template placeholder {{{name}}}")
    for name in layout.id_columns:
        needed.setdefault(name, "id_columns")
    needed.setdefault(layout.label_column, "label_column")
    for name in layout.group_columns:
        needed.setdefault(name, "group_columns")
    if layout.control_column:
        needed.setdefault(layout.control_column, "control_column")
    return needed


def check_columns(columns: list[str], layout: LayoutParams) -> None:
    """Refuse a layout naming a column the metadata lacks, naming the key and the column."""
    for name, key in required_columns(layout).items():
        if name not in columns:
            raise LayoutError(
                f"data.layout.{key}: {name!r} is not a column of {layout.metadata} (its columns: {', '.join(columns)})"
            )


def read_metadata(data: bytes, layout: LayoutParams) -> pd.DataFrame:
    """Parse the metadata CSV (every value as text, so plate ``1`` stays ``1``) and check its columns."""
    try:
        table = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise LayoutError(f"{layout.metadata}: not a readable CSV table ({error})") from None
    check_columns(list(table.columns), layout)
    if table.empty:
        raise LayoutError(f"{layout.metadata} lists no samples (only a header?); data/raw is left as it is")
    return table


def resolve(template: str, row: Mapping[str, str], channel: str) -> str:
    """One channel's file of one metadata row, checked to stay below the root."""
    name = template.format_map({**row, "channel": channel})
    path = PurePosixPath(name)
    if not name or path.is_absolute() or "\\" in name or ".." in path.parts or re.match(r"^[A-Za-z]:", name):
        raise LayoutError(f"data.layout.file_template gives {name!r}, which is not a path below data.layout.root")
    return path.as_posix()


def normalise(metadata: pd.DataFrame, layout: LayoutParams) -> pd.DataFrame:
    """The metadata as the normalised table described in the module docstring."""
    ids = metadata[layout.id_columns].astype(str)
    sample = ids.iloc[:, 0].str.cat(ids.iloc[:, 1:], sep="_") if len(layout.id_columns) > 1 else ids.iloc[:, 0]
    duplicated = sample.duplicated()
    if duplicated.any():
        first = sample[duplicated].iloc[0]
        raise LayoutError(
            f"{layout.metadata}: sample {first!r} appears twice; data.layout.id_columns {layout.id_columns} "
            "must name one image per row (RxRx1: [well_id, site])"
        )
    table = pd.DataFrame({SAMPLE: sample})
    for column in layout.group_columns:
        table[column] = metadata[column]
    table[LABEL] = metadata[layout.label_column].str.strip()
    if layout.control_column:
        table[IS_CONTROL] = metadata[layout.control_column].isin(layout.control_values)
    else:
        table[IS_CONTROL] = False
    rows = metadata.to_dict(orient="records")
    for channel in layout.channels:
        table[file_column(channel)] = [resolve(layout.file_template, row, channel) for row in rows]
    _check_labels(table, layout)
    return table.reset_index(drop=True)


def split_labels(label: str, separator: str | None) -> list[str]:
    """A sample's classes: the label text split at ``separator`` (``None``: one class)."""
    if separator is None:
        return [label] if label else []
    return [part for part in label.split(separator) if part]


def _check_labels(table: pd.DataFrame, layout: LayoutParams) -> None:
    labelled = table[~table[IS_CONTROL]]
    for sample, label in zip(labelled[SAMPLE], labelled[LABEL]):
        classes = split_labels(label, layout.label_separator)
        if not classes:
            raise LayoutError(f"{layout.metadata}: sample {sample!r} has no label in column {layout.label_column!r}")
        # "|" inside a class name means the labels use the other separator (34 "classes" such as
        # 0|23 otherwise); spaces are legitimate inside names, as in HPA's "Nuclear membrane".
        joined = next((name for name in classes if "|" in name), None)
        if joined is not None and layout.label_separator != "|":
            raise LayoutError(
                f"{layout.metadata}: sample {sample!r} has label {joined!r}, which contains '|' but "
                f"data.layout.label_separator is {layout.label_separator!r}; set label_separator: \"|\""
            )
        if layout.classes is not None:
            unknown = [name for name in classes if name not in layout.classes]
            if unknown:
                raise LayoutError(
                    f"{layout.metadata}: sample {sample!r} has label {unknown[0]!r}, which is not in "
                    f"data.layout.classes ({', '.join(layout.classes)})"
                )


def class_names(table: pd.DataFrame, layout: LayoutParams) -> list[str]:
    """The classes, in index order: ``data.layout.classes``, else every label found, sorted
    (numerically when all are integers: HPA's ``0``..``27``); ``control`` last when kept as a class."""
    if layout.classes is not None:
        names = list(layout.classes)
    else:
        labels = table.loc[~table[IS_CONTROL], LABEL]
        found = {name for label in labels for name in split_labels(label, layout.label_separator)}
        names = sorted(found, key=lambda name: (0, int(name), "") if name.isdigit() else (1, 0, name))
    if layout.controls == "class" and table[IS_CONTROL].any():
        names.append(CONTROL_CLASS)
    return names


def with_controls(table: pd.DataFrame, controls: str) -> pd.DataFrame:
    """Control rows dropped (``exclude``) or labelled as the class ``control`` (``class``)."""
    if controls == "exclude":
        return table[~table[IS_CONTROL]].reset_index(drop=True)
    table = table.copy()
    table.loc[table[IS_CONTROL], LABEL] = CONTROL_CLASS
    return table


def read_normalised(path: Path | str) -> pd.DataFrame:
    """A normalised table written by the download or the split: every value as text, ``is_control`` a bool."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table[IS_CONTROL] = table[IS_CONTROL] == "True"
    return table


def files_of(table: pd.DataFrame) -> list[str]:
    """Every channel file the table names, row by row, in channel order."""
    return table[channel_columns(table)].to_numpy().ravel().tolist()
