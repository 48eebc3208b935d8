"""Smoke test: ``python -m benchmarks --quick`` still runs end to end and reports every row.

Timings are not asserted (machines are noisy); only that each benchmark produced its rows with
finite, positive values in the documented JSON shape.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.dvc_project import STAGES

ROOT = Path(__file__).resolve().parents[2]
EXPECTED_ROWS = {
    "simulate_images_per_s",
    "download_vs_sequential",
    "download_vs_sequential_rtt20ms",
    "preprocess_vs_naive",
    "preprocess_vs_decode_limit",
    "train_input_vs_seed_loader",
    "train_input_vs_compute_limit",
    "max_pool_forward_vs_torch",
    "dvc_noop_repro_s",
    "dvc_status_s",
    "e2e_dvc_repro_s",
    "baseline_peak_rss_mb",
    "baseline_rss_vs_one_matrix",
    "ddp_2proc_vs_1proc",
}


def _benchmarks(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    out = tmp_path / "bench.json"
    env_path = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": env_path, "HOME": str(tmp_path), "GIT_CONFIG_GLOBAL": "/dev/null"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())
    for row in rows:
        assert set(row) >= {"name", "value", "unit"}
        assert math.isfinite(row["value"]) and row["value"] > 0, row
    return result, rows


@pytest.mark.slow
def test_quick_benchmark_suite_reports_every_row(tmp_path):
    result, rows = _benchmarks(tmp_path, "--markdown", str(tmp_path / "bench.md"))
    names = {row["name"] for row in rows}
    table = (tmp_path / "bench.md").read_text()
    assert all(f"| {name} | " in table for name in names)  # the table the docs include
    assert names >= EXPECTED_ROWS, EXPECTED_ROWS - names
    assert not any(name.startswith("full_") for name in names)  # the full-size run only on request
    assert "preprocess_vs_naive" in result.stdout  # the printed table


@pytest.mark.slow
def test_full_size_run_reports_every_stage_and_its_limit_at_a_tiny_size(tmp_path):
    result, rows = _benchmarks(tmp_path, "--only", "full_size", "--images-per-condition", "12",
                               "--results", str(tmp_path / "results"))
    names = [row["name"] for row in rows]
    limited = ["download", "preprocess", "train-lenet", "lr-find"]
    assert names == ([f"full_{stage}_s" for stage in STAGES] + ["full_dvc_repro_s"]
                     + [f"full_{stage}_vs_limit" for stage in limited]
                     + ["full_train-lenet_rerun_vs_limit", "full_host_rate", "full_features_vs_decode"])
    assert all("peak RSS" in row["note"] for row in rows[: len(STAGES)])
    assert "204 simulated images" in rows[len(STAGES)]["note"]
    assert "full_train-lenet_vs_limit" in result.stdout
    table = json.loads((tmp_path / "results" / "full_size_12.json").read_text())
    assert [stage["stage"] for stage in table["stages"]] == list(STAGES)
    assert all(stage["peak_rss_mib"] > 0 for stage in table["stages"])
    # Anonymous memory is part of RSS: sampled, so its peak is never above the kernel's peak RSS.
    assert all(0 < stage["peak_anonymous_mib"] <= stage["peak_rss_mib"] for stage in table["stages"])
    # One dvc repro: the stages' seconds add up to it, and each holds its command's.
    assert sum(stage["seconds"] for stage in table["stages"]) == pytest.approx(table["total_s"], abs=0.6)
    assert all(0 < stage["command_s"] <= stage["seconds"] for stage in table["stages"])
    assert {stage["stage"] for stage in table["stages"] if stage["vs_limit"]} == set(limited)
    rerun = table["train_lenet_rerun"]  # the same command again, bracketed by two limits
    # Its ratio to their mean, within what the JSON's rounding (0.01 s, 0.001 s, 0.01) leaves: at this size
    # each limit is about a hundredth of a second, so the bounds are wide but not vacuous.
    limits = rerun["limit_before_s"] + rerun["limit_after_s"]
    lowest = 2 * (rerun["command_s"] - 0.005) / (limits + 0.001) - 0.005
    highest = 2 * (rerun["command_s"] + 0.005) / max(limits - 0.001, 1e-3) + 0.005
    assert lowest <= rerun["vs_limit"] <= highest
    assert all(rate > 0 for rate in table["host_rate"].values())
    markdown = (tmp_path / "results" / "full_size_12.md").read_text()
    assert "| preprocess |" in markdown and "bare TIFF decode" in markdown
    comparison = (tmp_path / "results" / "full_size_12_comparison.md").read_text()  # the run's own evaluate
    assert comparison.startswith("# Test split:") and "lenet_pool + foci count" in comparison
