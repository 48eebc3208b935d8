"""The library's layers: a subpackage imports only from the layers below it (and from itself).

Read from the sources, function-level imports included, so a new upward import fails here the
day it is written. The order is the pipeline's: plumbing, data, what is simulated and what is
predicted, the models, the classical baselines, training, evaluation, serving, and the user
commands on top.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.imports import ROOT, bps_imports

LAYERS = {
    "core": 0,
    "data": 1,
    "sim": 2,
    "targets": 2,
    "models": 3,
    "classical": 4,
    "training": 5,
    "evaluation": 6,
    "serving": 7,
    "cli": 8,  # bps/cli.py and bps/__main__.py: the user commands
}
MODULES = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "bps").rglob("*.py"))


def layer(module: str) -> str:
    """``bps/data/layouts/meta.py`` → ``data``; ``bps/cli.py`` → ``cli``."""
    parts = Path(module).parts
    return parts[1] if len(parts) > 2 else "cli"


def test_every_module_lives_in_a_known_layer():
    assert {layer(module) for module in MODULES} <= set(LAYERS)
    flat = [module for module in MODULES if layer(module) == "cli" and Path(module).name
            not in ("__init__.py", "__main__.py", "cli.py")]
    assert not flat, f"modules outside a subpackage: {flat}"


def upward(module: str, imported: set[str]) -> list[str]:
    """The modules in ``imported`` that ``module`` may not import: another layer at or above its own."""
    own = LAYERS[layer(module)]
    return sorted(name for name in imported if layer(name) != layer(module) and LAYERS[layer(name)] >= own)


@pytest.mark.parametrize("module", MODULES)
def test_no_module_imports_a_higher_layer(module):
    found = upward(module, bps_imports(ROOT / module))
    assert not found, f"{module} (layer {layer(module)}) imports {found}: a layer at or above its own"


def test_the_check_catches_an_upward_import(tmp_path):
    """The test above can fail: a data module importing training, even inside a function, is reported."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from bps.training.loop import train_epoch\n    from bps.core import files\n")
    imported = bps_imports(probe)
    assert imported == {"bps/training/loop.py", "bps/core/files.py"}
    assert upward("bps/data/probe.py", imported) == ["bps/training/loop.py"]
