"""`dvc plots show` renders every plot with no internet, each titled with its model."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / ".dvc" / "plots" / "offline.html"
MODELS = ("CNN", "Baseline MLP", "Appearance model", "Foci-count")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _vega_plots(page: str) -> dict[str, dict]:
    """Each Vega plot of a page DVC wrote, by the id of the div it is drawn into."""
    found = re.finditer(r"var spec = (\{.*?\});\s*vegaEmbed\('#([^']+)'", page, re.S)
    return {match.group(2): json.loads(match.group(1)) for match in found}


def test_the_page_template_loads_nothing_from_the_network():
    page = TEMPLATE.read_text()
    assert "{plot_divs}" in page
    assert not re.search(r"<script[^>]+src=", page), "every script must be inlined"
    for bundle in ("vega ", "vega-lite ", "vega-embed "):
        assert f"/*! {bundle}" in page, f"{bundle.strip()} bundle (with its licence) missing"


def test_every_vega_plot_title_names_its_model():
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    for entry in plots:
        (target, props), = entry.items() if isinstance(entry, dict) else ((entry, None),)
        if props is None:  # an image folder: its files are named by model (metrics/saliency/lenet_*.png)
            continue
        assert any(model in props.get("title", "") for model in MODELS), f"{target}: title names no model"


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_every_plot_renders_offline_in_headless_chromium(tmp_path):
    out = tmp_path / "plots"
    dvc = Path(sys.executable).with_name("dvc")
    subprocess.run([str(dvc), "plots", "show", "-o", str(out)], cwd=ROOT, check=True, capture_output=True)
    page = (out / "index.html").read_text()
    plots = _vega_plots(page)
    assert len(plots) >= 19
    for image in re.findall(r'<img src="(static/[^"]+)"', page):
        assert (out / image).stat().st_size > 0, image
    # Every host name fails to resolve, so a page that needs the internet cannot render here.
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND",
         "--virtual-time-budget=20000", "--dump-dom", (out / "index.html").as_uri()],
        check=True, capture_output=True, text=True, timeout=180,
    ).stdout
    starts = sorted((dom.find(f'<div id="{plot}"'), plot) for plot in plots)
    assert starts[0][0] >= 0, "a plot's div is missing from the rendered page"
    ends = [start for start, _ in starts[1:]] + [len(dom)]
    blank = [
        plot for (start, plot), end in zip(starts, ends)
        if 'class="marks"' not in dom[start:end] or not re.search(r'<path[^>]* d="M', dom[start:end])
    ]
    assert not blank, f"blank plots: {blank}"
