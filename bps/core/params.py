"""A typed, validated view of ``params.yaml``: the one place that knows the keys.

Every stage calls :func:`load_params` first, so a typo or an out-of-range value fails with
one line naming the key and what is allowed, before any work starts.
"""

from __future__ import annotations

import os
import string
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bps.core import options
from bps.core.errors import PipelineError
from bps.core.workers import usable_cores

PARAMS_FILE = Path("params.yaml")
RUNTIME_FILE = "runtime.yaml"  # beside a params file: what changes speed, not results (no stage depends on it)
# The keys of runtime.yaml: where they sit in the params, and the only ones it may hold.
RUNTIME_KEYS = (("data", "s3", "workers"), ("data", "s3", "retries"), ("data", "s3", "connect_timeout_s"),
                ("preprocess", "workers"))
# One seed scheme: the top-level `seed` seeds the whole study (the image sample, the simulator, the
# split, every model's training, the bootstrap); `train.seed`, when set, re-seeds the training of
# every model alone (a seed sweep). These fields are filled from them and may not be set by hand.
STUDY_SEEDS = (("data", "sample_seed"), ("data", "synthetic", "seed"), ("split", "seed"), ("evaluate", "seed"))
TRAINING_SEEDS = (("train", "seed"), ("baseline", "seed"), ("appearance", "seed"))
DERIVED_SEEDS = (*STUDY_SEEDS, *TRAINING_SEEDS[1:])  # never in a params file
RENAMED = {("preprocess", "size"): "preprocess.image_size"}  # old key: new key
# Files the download writes into data/raw itself (bps/core/paths.py, bps/data/s3.py), which a metadata path may not be.
RESERVED_RAW_NAMES = ("meta.csv", ".manifest.json")

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
# Integers and booleans are strict ("10" or "yes" is a typo to report, not to guess at). Floats
# stay lax: PyYAML reads `3e-4` (no dot, as `dvc exp run -S` writes it) as a string.
PositiveInt = Annotated[StrictInt, Field(gt=0)]
Seed = Annotated[StrictInt, Field(ge=0)]


# The MLP baseline's weights (inputs × first layer + ... + biases, float64): 50 M is 400 MB for the
# weights alone, with Adam's two moments and the gradients ~1.6 GB; [100000, 100000] would need TBs.
MAX_MLP_PARAMETERS = 50_000_000
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # one folder per GPU the driver sees (no torch import)


def cuda_gpus() -> int:
    """CUDA GPUs visible to this process, read from the driver and CUDA_VISIBLE_DEVICES, without torch."""
    present = len(list(NVIDIA_GPUS.iterdir())) if NVIDIA_GPUS.is_dir() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return present
    return min(present, len([device for device in visible.split(",") if device.strip() and device.strip() != "-1"]))


def mlp_parameters(inputs: int, hidden_layers: list[int]) -> int:
    """Weights and biases of an MLP's hidden layers (the output layer adds a few per class)."""
    sizes = [inputs, *hidden_layers]
    return sum(fan_in * fan_out + fan_out for fan_in, fan_out in zip(sizes, sizes[1:]))


class ParamsError(PipelineError, ValueError):
    """A parameter is missing, unknown, of the wrong type or out of range."""


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class S3Params(_Block):
    bucket: str = "nasa-bps-training-data"
    prefix: str = "Microscopy/train"
    region: str = "us-west-2"
    anonymous: StrictBool = True
    endpoint_url: str | None = None
    workers: Annotated[StrictInt, Field(ge=1, le=256)] = 32
    retries: Annotated[StrictInt, Field(ge=0, le=20)] = 4
    connect_timeout_s: Annotated[float, Field(gt=0, le=120)] = 5.0


class SyntheticParams(_Block):
    """The offline simulator (bps/sim/render.py): size, seed and the strength of each confound.

    A strength is the relative standard deviation of its effect (bps/sim/confounds.py): 0 switches
    it off; above 0.5 nuclei would be unrecognisable.
    """

    images_per_condition: PositiveInt = 200
    seed: Seed = 0
    # Mild, real-like defaults, plate drift first: a plate-disjoint split removes most of the
    # sham-vs-sham signal (the README's probe numbers), the batch keeps a little by design.
    batch_effect: Annotated[float, Field(ge=0.0, le=0.5)] = 0.02
    well_effect: Annotated[float, Field(ge=0.0, le=0.5)] = 0.05
    plate_effect: Annotated[float, Field(ge=0.0, le=0.5)] = 0.1


class LayoutParams(_Block):
    """A multi-channel dataset on disk or S3 (``data.source: layout``), e.g. HPA or RxRx1.

    One metadata CSV row names one or more images (``id_columns``); ``file_template`` turns a
    row and a channel name into the channel's file. Checks that need the metadata's columns
    (every placeholder, id, label, group and control column exists) run in bps/data/layouts/meta.py,
    at check-params and again at download. See the presets/ folder and the README.
    """

    root: str = "fixtures/hpa"
    metadata: str = "train.csv"
    id_columns: list[str] = Field(default=["Id"], min_length=1)
    label_column: str = "Target"
    label_separator: Literal[options.LABEL_SEPARATORS] | None = " "
    classes: list[str] | None = None
    file_template: str = "train/{Id}_{channel}.png"
    channels: list[str] = Field(default=["red", "green", "blue", "yellow"], min_length=1)
    bit_depth: Literal[8, 16] = 8
    group_columns: list[str] = []
    control_column: str | None = None
    control_values: list[str] = []
    controls: Literal[options.CONTROLS] = "exclude"

    @model_validator(mode="after")
    def _consistent(self) -> LayoutParams:
        placeholders = template_fields(self.file_template)
        if "channel" not in placeholders:
            raise ValueError(f"file_template {self.file_template!r} must contain {{channel}}")
        for key in ("id_columns", "channels", "group_columns", "control_values"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise ValueError(f"{key} lists a value twice ({values})")
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes lists a class twice ({self.classes})")
        if bool(self.control_column) != bool(self.control_values):
            raise ValueError("control_column and control_values go together: set both or neither")
        if Path(self.metadata).is_absolute() or ".." in Path(self.metadata).parts:
            raise ValueError(f"metadata {self.metadata!r} must be a path inside root")
        if self.metadata in RESERVED_RAW_NAMES:
            raise ValueError(f"metadata may not be {self.metadata!r}: the download writes that file itself")
        return self


def template_fields(template: str) -> list[str]:
    """The placeholders of a file template (``{Id}_{channel}.png`` → ``["Id", "channel"]``), or a
    ValueError naming what is malformed (``{}``, ``{0}``, ``{a.b}``, ``{a:03d}`` are refused)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise ValueError(f"file_template {template!r} is malformed ({error})") from None
    fields = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ValueError(
                f"file_template {template!r}: placeholder {{{name}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}} must be a plain column name such as {{plate}}"
            )
        fields.append(name)
    return fields


class DataParams(_Block):
    source: Literal[options.SOURCES] = "synthetic"
    hours: list[Literal[options.HOURS]] = Field(default=list(options.HOURS), min_length=1)
    max_per_condition: PositiveInt | None = None
    sample_seed: Seed = 0
    synthetic: SyntheticParams = SyntheticParams()
    s3: S3Params = S3Params()
    layout: LayoutParams = LayoutParams()  # read only with source: layout


class SplitParams(_Block):
    """How images are dealt to train/val/test; see bps/data/split.py for what each protocol can claim."""

    protocol: Literal["grouped", "leave_hour_out", "leave_wells_out"] = "grouped"
    # BPS: well | field | none; data.source layout: one of data.layout.group_columns or none
    # (checked in Params, which sees both blocks).
    group_by: str = "well"
    test_hour: Literal[4, 24, 48] = 24
    # plate (leave_hour_out, task.target particle): validation is whole irradiated plates of the training hours
    val_unit: Literal["group", "plate"] = "group"
    train: Fraction = 0.7
    val: Fraction = 0.15
    test: Fraction = 0.15
    seed: Seed = 0

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitParams:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must sum to 1 (got {total:g})")
        if min(self.train, self.val, self.test) <= 0:
            raise ValueError("train, val and test must each be > 0")
        return self


class PreprocessParams(_Block):
    image_size: Annotated[StrictInt, Field(ge=16, le=512)] = 40
    # window: the crop's centre window of window_px shrunk, one factor for every crop (a pixel is the same µm in
    # each); fit: the whole crop shrunk to image_size; native: its centre at native scale; nucleus: its nucleus's box
    scale: Literal["fit", "native", "nucleus", "window"] = "window"
    window_px: Annotated[StrictInt, Field(ge=16, le=2048)] = 144
    # percentile: each image on its own, so a plate's staining and background drift do not reach the CNN;
    # nucleus: each crop in units of its nucleus's contrast over its background, as the foci count measures
    normalize: Literal["fixed", "percentile", "minmax", "nucleus"] = "percentile"
    fixed_range: tuple[Annotated[StrictInt, Field(ge=0, le=65535)], Annotated[StrictInt, Field(ge=0, le=65535)]] = (
        200,
        3000,
    )
    percentiles: tuple[Annotated[float, Field(ge=0, le=100)], Annotated[float, Field(ge=0, le=100)]] = (
        0.5,
        99.9,
    )
    on_error: Literal["fail", "skip"] = "fail"
    # a second CNN input channel: the band-pass response that the foci count thresholds, taken at native
    # scale (where a focus is ~5 px wide), then shrunk like the image (bps/classical/features.py)
    foci_channel: StrictBool = False
    # runtime.yaml: speed, not results; left out of what a model card or report records
    workers: Annotated[StrictInt, Field(ge=0, le=64, exclude=True)] = 0

    @model_validator(mode="after")
    def _ranges_increase(self) -> PreprocessParams:
        if self.fixed_range[0] >= self.fixed_range[1]:
            raise ValueError("fixed_range must be [low, high] with low < high")
        if self.percentiles[0] >= self.percentiles[1]:
            raise ValueError("percentiles must be [low, high] with low < high")
        return self


class FeatureParams(_Block):
    """Classical features for the appearance and foci baselines (bps/classical/features.py)."""

    spot_sigma: Annotated[float, Field(ge=0.5, le=3.0)] = 1.5
    # Spot thresholds as fractions of the nucleus's contrast over its background: dim and bright foci.
    thresholds: tuple[Annotated[float, Field(gt=0, le=5)], Annotated[float, Field(gt=0, le=5)]] = (0.25, 0.5)

    @model_validator(mode="after")
    def _thresholds_increase(self) -> FeatureParams:
        if self.thresholds[0] >= self.thresholds[1]:
            raise ValueError("thresholds must be [dim, bright] with dim < bright")
        return self


class AppearanceParams(_Block):
    """Gradient boosting on plate-appearance features."""

    max_iter: PositiveInt = 200
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 0.1
    max_leaf_nodes: Annotated[StrictInt, Field(ge=2, le=1024)] = 31
    l2_regularization: Annotated[float, Field(ge=0)] = 0.0
    seed: Seed = 0


class FociParams(_Block):
    """Standardised foci features, then logistic regression."""

    C: Annotated[float, Field(gt=0)] = 1.0
    max_iter: PositiveInt = 1000


class FusionParams(_Block):
    """The CNN's features beside the foci features, standardised, then logistic regression."""

    C: Annotated[float, Field(gt=0)] = 1.0
    max_iter: PositiveInt = 1000


class TaskParams(_Block):
    # BPS sources: one of options.BPS_TARGETS; data.source layout: labels (checked in Params).
    target: Literal[options.TARGETS] = "particle"
    # Multi-label targets: one threshold for all labels, or each label's own, chosen on the val split.
    threshold: Literal[options.THRESHOLDS] = "per_label"


class BaselineParams(_Block):
    hidden_layers: list[PositiveInt] = Field(default=[25, 25], min_length=1)
    lr: Annotated[float, Field(gt=0, le=1)] = 3e-4
    batch_size: PositiveInt = 64
    epochs: PositiveInt = 10
    seed: Seed = 0


class TrainParams(_Block):
    lr: Annotated[float, Field(gt=0, le=1)] = 3e-4
    batch_size: PositiveInt = 64
    epochs: PositiveInt = 10
    seed: Seed = 0  # params.yaml: null (the study's seed) or a seed of its own: see TRAINING_SEEDS
    optimizer: Literal[options.OPTIMIZERS] = "adam"
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 0.0
    augment: StrictBool = True
    tta: StrictBool = False  # predictions averaged over the 8 flips/rotations (not the per-epoch validation)
    crop_pad: Annotated[StrictInt, Field(ge=0, le=32)] = 4
    # Random gain, offset, gamma and blur per training image (bps/training/batches.py IntensityAugment); 0 = off.
    intensity_augment: Annotated[float, Field(ge=0, le=1)] = 0.3  # chosen at drift 0.15 (docs/experiments.md)
    # The largest σ of intensity_augment's blur, in input pixels (IntensityAugment); null: 2 × intensity_augment.
    blur_px: Annotated[float, Field(ge=0, le=4)] | None = 0.3  # chosen at full size (docs/experiments.md)
    # Random chromatin contrast per training image (TextureAugment): the detail around a 2 px blur scaled; 0 = off.
    texture_augment: Annotated[float, Field(ge=0, le=1)] = 0.0
    # A sham's particle label is its batch's, not its own. exclude: train and validate on irradiated nuclei only;
    # uniform: train on the shams too, towards equal odds of either particle, and validate on the irradiated.
    shams: Literal["include", "exclude", "uniform"] = "include"
    # Weight of the gradient reversal behind a head guessing each sham nucleus's plate (bps/training/adversary.py).
    adversary: Annotated[float, Field(ge=0, le=10)] = 0.0
    # Weight of a head regressing each training nucleus's foci features (bps/training/foci_target.py); 0 = off.
    foci_auxiliary: Annotated[float, Field(ge=0, le=100)] = 0.0
    # Per-step decay of a moving average of the weights, which is validated and kept (bps/training/loop.py); 0 = off.
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = 0.0
    # Picks the kept epoch: the validation log loss, smooth where macro F1 at a 0.5 threshold moves in steps.
    select_metric: Literal["val_accuracy", "val_macro_f1", "val_loss"] = "val_loss"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    model: Literal[options.ARCHITECTURES] = "lenet_pool"
    pretrained: str | None = None
    scheduler: Literal[options.SCHEDULERS] = "none"
    lr_step_epochs: PositiveInt = 5
    lr_gamma: Annotated[float, Field(gt=0, le=1)] = 0.5
    early_stopping_patience: Annotated[StrictInt, Field(ge=0)] = 0
    class_weight: Literal["none", "balanced"] = "none"
    sampler: Literal["shuffle", "weighted"] = "shuffle"
    amp: StrictBool = False
    channels_last: StrictBool = False
    processes: Annotated[StrictInt, Field(ge=1, le=64)] = 1
    force_processes: StrictBool = False  # allow more processes than this machine's cores or GPUs

    @model_validator(mode="after")
    def _processes_fit_the_machine(self) -> TrainParams:
        cores, gpus = usable_cores(), cuda_gpus()
        if self.processes > max(cores, gpus) and not self.force_processes:
            raise ValueError(f"train.processes: {self.processes} is more than this machine has ({cores} cores, "
                             f"{gpus} CUDA GPUs): lower it, or set train.force_processes: true")
        return self

    @model_validator(mode="after")
    def _one_training_head(self) -> TrainParams:
        if self.adversary > 0 and self.foci_auxiliary > 0:
            raise ValueError("train.adversary and train.foci_auxiliary: one training-only head at a time, set one to 0")
        return self

    @model_validator(mode="after")
    def _pretrained_needs_resnet(self) -> TrainParams:
        if self.pretrained is not None and not self.model.startswith("resnet"):
            raise ValueError(f"pretrained weights apply to resnet18/resnet50, not {self.model}")
        return self


class LrFindParams(_Block):
    """The learning-rate range test of the CNN (stage lr-find, bps/training/lr_find.py)."""

    min_lr: Annotated[float, Field(gt=0, le=10)] = 1e-6
    max_lr: Annotated[float, Field(gt=0, le=10)] = 1.0
    steps: Annotated[StrictInt, Field(ge=2, le=10_000)] = 100
    smoothing: Annotated[float, Field(gt=0, le=1)] = 0.05  # weight of the newest loss in the moving average
    diverge_factor: Annotated[float, Field(gt=1)] = 4.0

    @field_validator("max_lr")
    @classmethod
    def _above_min_lr(cls, max_lr: float, info: ValidationInfo) -> float:
        min_lr = info.data.get("min_lr")  # absent when min_lr itself was invalid (reported on its own)
        if min_lr is not None and max_lr <= min_lr:
            raise ValueError(f"must be greater than lr_find.min_lr ({min_lr:g}), got {max_lr:g}")
        return max_lr


class EvaluateParams(_Block):
    bootstrap_unit: Literal["well", "plate"] = "well"
    resamples: Annotated[StrictInt, Field(ge=100, le=100_000)] = 2000
    seed: Seed = 0
    calibration_bins: Annotated[StrictInt, Field(ge=2, le=100)] = 10
    saliency_per_class: Annotated[StrictInt, Field(ge=0, le=64)] = 4


class Params(_Block):
    seed: Seed = 0
    data: DataParams = DataParams()
    split: SplitParams = SplitParams()
    preprocess: PreprocessParams = PreprocessParams()
    task: TaskParams = TaskParams()
    baseline: BaselineParams = BaselineParams()
    train: TrainParams = TrainParams()
    features: FeatureParams = FeatureParams()
    appearance: AppearanceParams = AppearanceParams()
    foci: FociParams = FociParams()
    fusion: FusionParams = FusionParams()
    evaluate: EvaluateParams = EvaluateParams()
    lr_find: LrFindParams = LrFindParams()

    @model_validator(mode="before")
    @classmethod
    def _one_seed(cls, raw: object) -> object:
        """Refuse renamed keys and hand-set derived seeds; fill every seed field from ``seed`` and ``train.seed``."""
        if not isinstance(raw, dict):
            return raw
        for old, new in RENAMED.items():
            if _has(raw, old):
                raise ValueError(f"{'.'.join(old)}: renamed to {new}")
        for path in DERIVED_SEEDS:
            if _has(raw, path):
                raise ValueError(f"{'.'.join(path)}: one seed scheme: set the top-level `seed` (the whole study), "
                                 "or train.seed (every model's training alone)")
        study = raw.get("seed", 0)
        if not isinstance(study, int) or isinstance(study, bool):
            return raw  # reported as `seed` by the field's own check
        train = raw.get("train")
        training = train.get("seed") if isinstance(train, dict) else None
        for path in STUDY_SEEDS:
            raw = with_key(raw, path, study)
        for path in TRAINING_SEEDS:
            raw = with_key(raw, path, study if training is None else training)
        return raw

    @model_validator(mode="after")
    def _mlp_fits_in_memory(self) -> Params:
        channels = len(self.data.layout.channels) if self.data.source == "layout" else 1 + self.preprocess.foci_channel
        inputs = channels * self.preprocess.image_size**2
        count = mlp_parameters(inputs, self.baseline.hidden_layers)
        if count > MAX_MLP_PARAMETERS:
            raise ValueError(
                f"baseline.hidden_layers: {self.baseline.hidden_layers} on {inputs} inputs ({channels} channels × "
                f"preprocess.image_size {self.preprocess.image_size}²) is {count:,} parameters; "
                f"at most {MAX_MLP_PARAMETERS:,}")
        return self

    @model_validator(mode="after")
    def _foci_channel_is_for_nuclei(self) -> Params:
        if self.preprocess.foci_channel and self.data.source == "layout":
            raise ValueError("preprocess.foci_channel: true is for BPS nuclei (one TIFF each); "
                             "data.source layout has its own channels")
        if self.preprocess.scale == "nucleus" and self.data.source == "layout":
            raise ValueError("preprocess.scale: nucleus is for BPS nuclei (one TIFF each); "
                             "data.source layout's channels would each find their own box")
        if self.preprocess.scale == "window" and self.data.source == "layout":
            raise ValueError("preprocess.scale: window is for BPS nuclei (crops cut around one nucleus); "
                             "data.source layout's whole images want preprocess.scale: fit")
        return self

    @model_validator(mode="after")
    def _shams_leave_particle_to_learn(self) -> Params:
        if self.train.shams != "include" and self.task.target != "particle":
            raise ValueError(f"train.shams: {self.train.shams} is for task.target particle; {self.task.target} "
                             "learns from every image")
        return self

    @model_validator(mode="after")
    def _validation_plates_need_unseen_plates_and_particle(self) -> Params:
        split, target = self.split, self.task.target
        if split.val_unit == "plate" and (split.protocol != "leave_hour_out" or target != "particle"):
            raise ValueError(f"split.val_unit: plate is for split.protocol leave_hour_out and task.target particle "
                             f"(got {split.protocol} and {target}): a held-out plate is a held-out condition")
        return self

    @model_validator(mode="after")
    def _crop_fits_image(self) -> Params:
        if self.train.crop_pad >= self.preprocess.image_size:
            raise ValueError(f"train.crop_pad ({self.train.crop_pad}) must be smaller than preprocess.image_size")
        return self

    @model_validator(mode="after")
    def _split_fits_the_source(self) -> Params:
        layout = self.data.source == "layout"
        allowed = [*self.data.layout.group_columns, "none"] if layout else list(options.BPS_GROUPS)
        if self.split.group_by not in allowed:
            where = "data.layout.group_columns, or none" if layout else f"data.source {self.data.source}"
            raise ValueError(f"split.group_by {self.split.group_by!r} is not one of {allowed} ({where})")
        if layout and self.split.protocol != "grouped":
            raise ValueError(
                f"split.protocol {self.split.protocol} needs BPS metadata; data.source layout allows: grouped"
            )
        return self

    @model_validator(mode="after")
    def _target_fits_the_source(self) -> Params:
        layout = self.data.source == "layout"
        allowed = [options.LAYOUT_TARGET] if layout else list(options.BPS_TARGETS)
        if self.task.target not in allowed:
            raise ValueError(f"task.target {self.task.target!r} is not allowed with data.source {self.data.source} "
                             f"(allowed: {', '.join(allowed)})")
        return self

    @model_validator(mode="after")
    def _held_out_hour_is_selected(self) -> Params:
        if self.split.protocol != "leave_hour_out":
            return self
        hours = sorted(set(self.data.hours))
        if self.split.test_hour not in hours:
            raise ValueError(f"split.test_hour ({self.split.test_hour}) must be one of data.hours {hours}")
        if len(hours) < 2:
            raise ValueError(f"split.protocol leave_hour_out needs another of data.hours to train on (got {hours})")
        return self


def _has(raw: dict, path: tuple[str, ...]) -> bool:
    """Whether the nested mapping ``raw`` sets the key ``path``."""
    for key in path[:-1]:
        raw = raw.get(key)
        if not isinstance(raw, dict):
            return False
    return path[-1] in raw


def with_key(raw: dict, path: tuple[str, ...], value: object) -> dict:
    """``raw`` with the key ``path`` set to ``value`` (copied, never changed in place); a block that is
    not a mapping is left for its own check to report."""
    head, *rest = path
    if not rest:
        return {**raw, head: value}
    inner = raw.get(head, {})
    return {**raw, head: with_key(inner, tuple(rest), value)} if isinstance(inner, dict) else raw


def _format_error(error: ValidationError, source: Path) -> str:
    """One line per problem: the dotted key, what was wrong, and what is allowed."""
    lines = []
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            parent = problem["loc"][:-1]
            model = Params
            for part in parent:
                model = model.model_fields[str(part)].annotation
            allowed = ", ".join(name for name in model.model_fields if (*parent, name) not in DERIVED_SEEDS)
            message = f"unknown key (allowed: {allowed})"
        elif problem["type"] == "value_error":
            message = message.removeprefix("Value error, ")
            named = message.split(" ", 1)[0]  # "block.key: ...": a check across keys names the key it blames
            if named.endswith(":") and named.startswith(key.replace("(top level)", "")):
                lines.append(f"{source}: {message}")
                continue
        elif "input" in problem and problem["type"] != "missing":
            message = f"{message} (got {problem['input']!r})"
        lines.append(f"{source}: {key}: {message}")
    return "\n".join(lines)


def parse_params(raw: dict | None, source: Path = PARAMS_FILE) -> Params:
    """Validate an already-loaded params mapping."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as error:
        raise ParamsError(_format_error(error, source)) from None


def inherited_files(path: Path) -> list[Path]:
    """The params files behind ``path``, outermost first: in a pipeline folder below the project root
    (``datasets/hpa/params.yaml``, which holds only what differs) the project's own params.yaml and
    any between, then ``path``; anywhere else ``path`` alone. The project root is the folder that
    holds ``.dvc/``."""
    folder = path.resolve().parent
    chain = [folder, *folder.parents]
    root = next((index for index, candidate in enumerate(chain) if (candidate / ".dvc").is_dir()), None)
    if root is None:
        return [path]
    outer = [candidate / path.name for candidate in reversed(chain[1 : root + 1])]
    return [file for file in outer if file.is_file()] + [path]


def merged(base: dict, override: dict) -> dict:
    """``override`` laid over ``base``, block by block (lists and values replace, mappings merge)."""
    result = dict(base)
    for key, value in override.items():
        result[key] = merged(result[key], value) if isinstance(value, dict) and isinstance(result.get(key), dict) \
            else value
    return result


def _leaf_keys(raw: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path of a nested mapping, down to its values."""
    keys = []
    for key, value in raw.items():
        path = (*prefix, str(key))
        keys += _leaf_keys(value, path) if isinstance(value, dict) else [path]
    return keys


def _read(file: Path) -> dict:
    try:
        loaded = yaml.safe_load(file.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{file}: not found (run the stage from the project root)") from None
    except yaml.YAMLError as error:
        raise ParamsError(f"{file}: not valid YAML: {error}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ParamsError(f"{file}: not a mapping of parameter blocks (got {type(loaded).__name__})")
    return loaded or {}


def _check_runtime_split(raw: dict, file: Path, runtime: bool) -> None:
    """runtime.yaml holds only :data:`RUNTIME_KEYS`, a params file none of them (one line naming the key)."""
    for key in _leaf_keys(raw):
        is_runtime = any(key[: len(known)] == known for known in RUNTIME_KEYS)
        if runtime and not is_runtime:
            raise ParamsError(f"{file}: {'.'.join(key)} changes results, not speed: set it in params.yaml")
        if not runtime and is_runtime:
            raise ParamsError(f"{file}: {'.'.join(key)} changes speed, not results: set it in {RUNTIME_FILE}, "
                              "which no stage depends on")


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """Read and validate ``params.yaml`` (over the files it inherits: :func:`inherited_files`) and the
    ``runtime.yaml`` beside each; raise :class:`ParamsError` naming each bad key."""
    path = Path(path)
    raw: dict = {}
    for file in inherited_files(path):
        loaded = _read(file)
        _check_runtime_split(loaded, file, runtime=False)
        raw = merged(raw, loaded)
        runtime = file.with_name(RUNTIME_FILE)
        if runtime.is_file():
            settings = _read(runtime)
            _check_runtime_split(settings, runtime, runtime=True)
            raw = merged(raw, settings)
    return parse_params(raw, path)
