"""Where each stage reads and writes: the paths that dvc.yaml declares, named once."""

from pathlib import Path

PARAMS_OK = Path("data/params.ok")  # written by check-params, read (as a DVC dep) by every other stage
RAW = Path("data/raw")
META = RAW / "meta.csv"
SPLIT = Path("data/split")
SPLIT_SUMMARY = SPLIT / "summary.json"
PREPARED = Path("data/prepared")
MODELS = Path("models")
SPLITS = ("train", "val", "test")
METRICS = Path("metrics")
CONTROL_SUFFIX = "-control"


def split_table(split: str) -> Path:
    """The CSV listing one split's images and their labels."""
    return SPLIT / f"{split}.csv"


def prepared_images(split: str) -> Path:
    """One split's N×1×H×W uint8 image array."""
    return PREPARED / f"{split}_images.npy"


def prepared_table(split: str) -> Path:
    """One split's labels, row for row with its image array."""
    return PREPARED / f"{split}.csv"


def control_name(model: str) -> str:
    """The folder (under models/ and metrics/) of a model's negative control."""
    return f"{model}{CONTROL_SUFFIX}"


FEATURES = Path("data/features")


def feature_table(split: str) -> Path:
    """One split's per-image classical features (appearance_*, foci_*) beside its labels."""
    return FEATURES / f"{split}.csv"
