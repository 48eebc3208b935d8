"""Option names are defined once (bps/core/options.py, bps/targets/labels.py, bps/data/meta.py) and used everywhere."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from bps.core import options
from bps.core.errors import PipelineError
from bps.core.params import ParamsError, TrainParams, parse_params
from bps.data.meta import HOURS
from bps.models.networks import ARCHITECTURES
from bps.targets.labels import TARGET_NAMES
from bps.training.loop import OPTIMIZERS, SCHEDULERS, make_optimizer, make_scheduler


def test_registries_implement_exactly_the_option_names():
    assert TARGET_NAMES == options.TARGETS
    assert HOURS == options.HOURS
    assert tuple(ARCHITECTURES) == options.ARCHITECTURES
    assert tuple(OPTIMIZERS) == options.OPTIMIZERS
    assert tuple(SCHEDULERS) == options.SCHEDULERS


def test_a_registry_missing_a_name_fails_at_import():
    with pytest.raises(TypeError, match="do not match the option names"):
        options.registry(("a", "b"), a=1)
    with pytest.raises(TypeError, match="do not match the option names"):
        options.registry(("a",), a=1, b=2)


@pytest.mark.parametrize(
    ("key", "value", "names"),
    [
        ("train.model", "vgg", options.ARCHITECTURES),
        ("train.optimizer", "lamb", options.OPTIMIZERS),
        ("train.scheduler", "onecycle", options.SCHEDULERS),
        ("task.target", "dose", TARGET_NAMES),
    ],
)
def test_params_validation_lists_the_names_defined_beside_the_code(key, value, names):
    block, name = key.split(".")
    with pytest.raises(ParamsError) as caught:
        parse_params({block: {name: value}})
    message = str(caught.value)
    assert message.startswith(f"params.yaml: {key}:")
    assert all(repr(allowed) in message for allowed in names), message


def test_hours_come_from_the_meta_schema():
    assert parse_params({"data": {"hours": list(HOURS)}}).data.hours == list(HOURS)
    with pytest.raises(ParamsError, match="data.hours.0"):
        parse_params({"data": {"hours": [12]}})


def test_an_unknown_scheduler_is_an_error_not_a_constant_rate():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    unvalidated = TrainParams.model_construct(**{**TrainParams().model_dump(), "scheduler": "onecycle"})
    with pytest.raises(PipelineError, match=r"train.scheduler: unknown 'onecycle' \(allowed: none, step, cosine"):
        make_scheduler(optimizer, unvalidated)
    assert make_scheduler(optimizer, TrainParams(scheduler="none")) is None
    assert isinstance(make_scheduler(optimizer, TrainParams(scheduler="step")), torch.optim.lr_scheduler.StepLR)


def test_sgd_keeps_its_momentum():
    model = torch.nn.Linear(2, 2)
    optimizer = make_optimizer(model, TrainParams(optimizer="sgd"))
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["momentum"] == 0.9


def test_params_validation_imports_no_torch():
    code = "import sys, bps.core.params, bps.models.card, bps.training.guard; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
