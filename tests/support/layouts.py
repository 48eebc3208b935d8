"""The two multi-channel datasets as the tests use them: their params, and toy copies to read."""

from __future__ import annotations

from pathlib import Path

import yaml

from bps.core.params import (
    DataParams,
    LayoutParams,
    merged,
)

ROOT = Path(__file__).resolve().parents[2]
DATASETS = ("hpa", "rxrx1")
OWN = {name: yaml.safe_load((ROOT / "datasets" / name / "params.yaml").read_text()) for name in DATASETS}
# What a stage in datasets/<name>/ reads: the project's params.yaml with the folder's laid over it.
PRESETS = {name: merged(yaml.safe_load((ROOT / "params.yaml").read_text()), OWN[name]) for name in DATASETS}


def layout_of(preset: str, root: Path | str, **changes) -> LayoutParams:
    return LayoutParams(**{**PRESETS[preset]["data"]["layout"], "root": str(root), **changes})


def data_of(preset: str, root: Path | str, **changes) -> DataParams:
    return DataParams(source="layout", layout=layout_of(preset, root, **changes))
