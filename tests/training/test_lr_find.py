"""The learning-rate range test: its reading of a curve, its early stop, the stage, and DVC's plot."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from bps.core.params import ParamsError, parse_params
from bps.training.lr_find import CURVE_COLUMNS, range_test, rates, suggest
from tests.support.dvc_project import dvc, isolated_env, make_project, stages_run
from tests.training.test_negative_control import write_prepared

ROOT = Path(__file__).resolve().parents[2]
TINY_STEPS = 30


def test_params_defaults_and_a_range_that_does_not_grow():
    settings = parse_params({}).lr_find
    assert (settings.min_lr, settings.max_lr, settings.steps, settings.smoothing, settings.diverge_factor) == (
        1e-6, 1.0, 100, 0.05, 4.0)
    with pytest.raises(ParamsError) as caught:
        parse_params({"lr_find": {"min_lr": 0.1, "max_lr": "1e-2"}})
    assert str(caught.value) == "params.yaml: lr_find.max_lr: must be greater than lr_find.min_lr (0.1), got 0.01"
    with pytest.raises(ParamsError, match=r"^params.yaml: lr_find.steps: Input should be greater than or equal to 2"):
        parse_params({"lr_find": {"steps": 1}})


def test_rates_grow_geometrically_from_min_to_max():
    lrs = rates(1e-6, 1.0, 7)
    np.testing.assert_allclose(lrs, [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0])


def test_the_suggestion_is_the_steepest_descent_before_the_lowest_loss():
    log_lrs = np.arange(-6.0, 0.1, 0.5)  # 13 rates, half a decade apart
    # Flat, falling (steepest between 10^-4 and 10^-3), lowest at 10^-2, then diverging with a
    # sharp dip (index 10) that is steeper still but lies past the lowest loss.
    smoothed = np.array([2.0, 2.0, 1.98, 1.95, 1.8, 1.2, 0.8, 0.6, 0.5, 4.0, 0.9, 2.0, 5.0])

    steepest, cautious = suggest(10**log_lrs, smoothed, smoothing=1.0)  # unsmoothed: slopes between neighbours

    assert steepest == pytest.approx(10**-3.5)  # central slopes: -0.75, -1.0 (index 5), -0.6
    assert cautious == pytest.approx(10**-2 / 10)


def test_one_lucky_batch_does_not_make_the_steepest_descent():
    def loss(lr: float) -> float:
        """Flat, then falling steepest at 10^-3, rising past 10^-1.5; one batch far too low at 10^-5.5."""
        x = math.log10(lr)
        lucky = 0.6 if abs(x + 5.5) < 0.03 else 0.0
        return 1.0 - 0.25 * (1 + math.tanh(2 * (x + 3))) + 5 * max(0.0, x + 1.5) ** 2 - lucky

    curve = range_test(loss, rates(1e-6, 1.0, 100), smoothing=0.05, diverge_factor=4.0)
    steepest, _ = suggest(curve.lrs, curve.smoothed, smoothing=0.05)

    # Slopes between neighbours would pick the lucky batch (10^-5.58); the average lags the
    # batches, so its steepest descent comes a little after the raw loss's.
    assert 1e-3 <= steepest <= 10**-2.2


def test_a_curve_that_never_falls_suggests_its_first_rate():
    lrs = rates(1e-5, 1e-1, 5)
    assert suggest(lrs, np.array([1.0, 1.1, 1.5, 3.0, 9.0]), 0.05) == (pytest.approx(1e-5), pytest.approx(1e-6))


def test_smoothing_is_bias_corrected_and_the_test_runs_every_rate_unless_it_diverges():
    lrs = rates(1e-6, 1.0, 20)
    curve = range_test(lambda lr: 2.0, lrs, smoothing=0.05, diverge_factor=4.0)
    np.testing.assert_allclose(curve.smoothed, 2.0)  # without the correction it would start at 0.1
    np.testing.assert_array_equal(curve.lrs, lrs)
    assert not curve.stopped_early
    assert list(curve.table().columns) == list(CURVE_COLUMNS)


def test_divergence_stops_the_test_early():
    calls = []

    def step(lr: float) -> float:
        calls.append(lr)
        return 1.0 if lr < 1e-2 else 100.0

    curve = range_test(step, rates(1e-6, 1.0, 61), smoothing=0.05, diverge_factor=4.0)

    assert curve.stopped_early
    assert len(calls) == len(curve.lrs) < 61  # no batch was trained past the stop
    assert curve.lrs[-1] >= 1e-2 > curve.lrs[-2]  # 0.95 + 0.05 · 100 > 4 × 1 at the first bad batch
    assert curve.smoothed[-1] > 4.0 * curve.smoothed[:-1].min()


def test_a_non_finite_loss_stops_the_test_and_is_not_recorded():
    curve = range_test(lambda lr: math.nan if lr > 1e-3 else 1.0, rates(1e-6, 1.0, 7), 0.05, 4.0)
    assert curve.stopped_early
    np.testing.assert_allclose(curve.lrs, [1e-6, 1e-5, 1e-4, 1e-3])
    assert np.isfinite(curve.losses).all()


# --- the stage on a tiny prepared dataset ------------------------------------------------------


def run_stage(folder: Path, seed: int) -> subprocess.CompletedProcess:
    """``python -m stages.lr_find`` in ``folder``, which holds data/prepared/ and a params.yaml."""
    params = {"preprocess": {"image_size": 16}, "task": {"target": "particle+dose"},
              "train": {"crop_pad": 2, "device": "cpu", "seed": seed, "batch_size": 16},
              "lr_find": {"steps": TINY_STEPS}}
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    result = subprocess.run([sys.executable, "-m", "stages.lr_find"], cwd=folder, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.slow  # three runs of the stage: about 15 s
def test_the_stage_writes_a_deterministic_curve_and_its_suggestion(tmp_path):
    write_prepared(tmp_path, np.random.default_rng(0))

    result = run_stage(tmp_path, seed=0)
    first = (tmp_path / "metrics/lr_find/curve.csv").read_bytes()
    curve = pd.read_csv(tmp_path / "metrics/lr_find/curve.csv")
    suggestion = json.loads((tmp_path / "metrics/lr_find/suggestion.json").read_text())

    assert list(curve.columns) == list(CURVE_COLUMNS)
    assert curve["step"].tolist() == list(range(len(curve)))
    assert (np.diff(curve["lr"]) > 0).all()
    assert curve["lr"].iloc[0] == pytest.approx(1e-6)
    np.testing.assert_allclose(curve["log10_lr"], np.log10(curve["lr"]))
    assert curve["loss"].nunique() > 1 and np.isfinite(curve[["loss", "smoothed_loss"]]).all(axis=None)
    assert suggestion["steps_run"] == len(curve)
    assert suggestion["stopped_early"] == (len(curve) < TINY_STEPS)
    assert (suggestion["model"], suggestion["target"]) == ("lenet_pool", "particle+dose")
    assert suggestion["suggested_lr"] in curve["lr"].tolist()
    assert suggestion["min_loss_lr_over_10"] * 10 == pytest.approx(curve["lr"][curve["smoothed_loss"].idxmin()])
    assert f"lr-find: suggested train.lr {suggestion['suggested_lr']:.3g}" in result.stdout
    assert not (tmp_path / "models").exists()  # the network is thrown away

    run_stage(tmp_path, seed=0)
    assert (tmp_path / "metrics/lr_find/curve.csv").read_bytes() == first
    run_stage(tmp_path, seed=1)
    assert (tmp_path / "metrics/lr_find/curve.csv").read_bytes() != first


# --- the real pipeline ---------------------------------------------------------------------------


@pytest.mark.slow
def test_dvc_repro_lr_find_and_its_plot(tmp_path):
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    env = isolated_env(sandbox)
    project = make_project(tmp_path / "project", env)

    result = dvc(project, env, "repro", "lr-find")

    assert stages_run(result) == ["check-params", "download", "split", "preprocess", "lr-find"]
    assert "lr-find: suggested train.lr" in result.stdout
    plots = json.loads(dvc(project, env, "plots", "show", "--json").stdout)["data"]
    (rendered,) = plots["metrics/lr_find/curve.csv"]
    spec = rendered["content"]
    assert rendered["type"] == "vega" and spec["title"]["text"].startswith("Learning-rate range test")
    assert spec["encoding"]["x"] == {"field": "log10_lr", "type": "quantitative", "title": "log10(learning rate)"}
    points = spec["data"]["values"]
    steps = len(pd.read_csv(project / "metrics/lr_find/curve.csv"))
    assert sorted(point["field"] for point in points) == ["loss"] * steps + ["smoothed_loss"] * steps
    metrics = json.loads(dvc(project, env, "metrics", "show", "--json").stdout)
    shown = metrics[""]["data"]["metrics/lr_find/suggestion.json"]["data"]
    assert shown == json.loads((project / "metrics/lr_find/suggestion.json").read_text())
    assert [path.name for path in (project / "models").iterdir()] == [".gitignore"]  # no model kept
    assert stages_run(dvc(project, env, "repro", "lr-find")) == []
