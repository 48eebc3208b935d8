"""The model card (``model.json``): what a model folder holds, written by both trainers, read by all.

One typed record says which kind of model the folder holds (``mlp`` baseline or ``cnn``), what
it predicts, the input it expects, how it was trained, the metrics of the kept checkpoint, and
whether training finished. Evaluate, predict and serve read it through :func:`read_card`, which
refuses a folder whose training did not finish: a checkpoint written at epoch 3 of 10 by a run
that was then interrupted is no model to publish.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bps.core import options
from bps.core.errors import PipelineError
from bps.core.files import write_json
from bps.core.params import Params, PreprocessParams

CARD_FILE = "model.json"
CNN_WEIGHTS = "model.pt"  # a CNN's weights-only state dict (bps/models/networks.py)
FUSION_CNN = "cnn"  # a fusion model's folder keeps the CNN it reads here (bps/models/loader.py)
# classical: a feature model (bps/classical/families.py), not for predict; fusion: one that reads a CNN's
# features beside the foci features (bps/classical/fusion.py), with a copy of that CNN in its cnn/ folder.
Kind = Literal["mlp", "cnn", "classical", "fusion"]


class ModelCardError(PipelineError, ValueError):
    """A model folder has no usable card, or its training did not finish."""


class ModelCard(BaseModel):
    """Everything needed to rebuild a model and feed it, and what it scored when it was kept."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind
    architecture: str  # "mlp" for the baseline; a train.model name for a CNN
    target: Literal[options.TARGETS]
    classes: list[str] = Field(min_length=2)
    in_channels: int = Field(default=1, gt=0)
    # The square input side (preprocess.image_size); None for feature models. Cards written before
    # the rename call it `size`.
    image_size: int | None = Field(default=None, gt=0, validation_alias=AliasChoices("image_size", "size"))
    # How the image models' inputs were prepared; None for feature models, which read data/features and whose
    # stages do not depend on these params (recording them would make dvc.lock depend on untracked values).
    preprocess: PreprocessParams | None = None
    training: dict[str, Any]  # the trainer's params block (`train` or `baseline`), as validated
    metrics: dict[str, int | float] = {}  # the kept checkpoint's epoch and validation scores
    control: bool = False  # a negative control: trained on sham images only (bps/training/negative_control.py)
    world_size: int = Field(default=1, gt=0)  # training processes (bps/training/distributed.py)
    complete: bool = False  # set only once the trainer has finished: see mark_complete
    multilabel: bool = False  # outputs are per-label sigmoids (task.target labels with a label separator)
    # A multi-label model's decision threshold per class, chosen on the validation split (task.threshold).
    thresholds: list[Annotated[float, Field(ge=0, le=1)]] | None = None
    channels: list[str] | None = None  # a layout's channel names, in input order (data.layout.channels)
    bit_depth: Literal[8, 16] | None = None  # a layout's channel files' pixel depth (data.layout.bit_depth)

    @field_validator("preprocess", mode="before")
    @classmethod
    def _renamed_size(cls, preprocess: object) -> object:
        """Cards written before preprocess.size became preprocess.image_size still load."""
        if isinstance(preprocess, dict) and "size" in preprocess:
            preprocess = {("image_size" if key == "size" else key): value for key, value in preprocess.items()}
        return preprocess

    @model_validator(mode="after")
    def _one_threshold_per_class(self) -> ModelCard:
        if self.thresholds is not None and len(self.thresholds) != len(self.classes):
            raise ValueError(f"thresholds: {len(self.thresholds)} for {len(self.classes)} classes")
        return self


def write_card(folder: Path, card: ModelCard) -> None:
    """Write ``model.json`` atomically."""
    write_json(folder / CARD_FILE, card.model_dump(mode="json"))


def read_card(folder: Path | str, require_complete: bool = True) -> ModelCard:
    """The folder's card; a missing, malformed or (by default) unfinished one is one clear error."""
    folder = Path(folder)
    path = folder / CARD_FILE
    if not path.is_file():
        raise ModelCardError(f"{folder}: not a model folder (no {CARD_FILE}); try models/lenet")
    try:
        card = ModelCard.model_validate_json(path.read_text())
    except ValidationError as error:
        problem = error.errors()[0]
        key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        raise ModelCardError(f"{path}: not a model card this version can read ({key}: {problem['msg']})") from None
    if require_complete and not card.complete:
        raise ModelCardError(
            f"{folder}: its training did not finish (an interrupted or running trainer left it); "
            "run `dvc repro` to train it, or `dvc checkout` to restore the last finished one"
        )
    return card


def layout_fields(params: Params, multilabel: bool) -> dict[str, Any]:
    """The card fields of a model trained on a layout (none for BPS: its cards stay as they were)."""
    if params.data.source != "layout":
        return {}
    layout = params.data.layout
    return {"multilabel": multilabel, "channels": list(layout.channels), "bit_depth": layout.bit_depth}


def store_thresholds(folder: Path, thresholds: Sequence[float]) -> None:
    """Record a multi-label model's decision thresholds in its card, before it is marked complete."""
    card = read_card(folder, require_complete=False)
    write_card(folder, card.model_copy(update={"thresholds": [round(float(t), 6) for t in thresholds]}))


def mark_complete(folder: Path) -> None:
    """Mark the folder's model finished: the last write of a successful training run."""
    write_card(folder, read_card(folder, require_complete=False).model_copy(update={"complete": True}))
