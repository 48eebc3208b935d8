"""dvc.yaml's deps follow the code: each stage lists the bps/ modules it imports, and nothing stale.

Both pipelines: the BPS one (dvc.yaml) and the multi-channel datasets' (datasets/dvc.yaml, whose
stages run in a dataset folder two levels down, so their paths start with ``../../``).

The import closure is computed from the sources (every ``import bps.x`` / ``from bps import x``
/ ``from bps.x import y``, at any depth, followed transitively), so a stage added or changed by
anyone is checked the day it lands.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.support.imports import ROOT, import_closure


def pipeline(path: str, prefix: str = "") -> dict[str, dict]:
    """A dvc.yaml's stages by name (a foreach stage by its template), their paths relative to the root."""
    stages = yaml.safe_load((ROOT / path).read_text())["stages"]
    result = {}
    for name, stage in stages.items():
        stage = stage.get("do", stage)
        deps = [dep.removeprefix(prefix) for dep in stage.get("deps", [])]
        result[f"{path}:{name}"] = {**stage, "deps": deps}
    return result


PIPELINE = {**pipeline("dvc.yaml"), **pipeline("datasets/dvc.yaml", prefix="../../")}
STAGE_COMMAND = re.compile(r"^(?:PYTHONPATH=\S+ )?python -m (stages(?:\.\w+)+)\b")
PARAMS_CHECK = "check-params"
PARAMS_OK = "data/params.ok"
# Modules that cannot change a stage's numbers: bps/core, the plumbing (how a stage starts and
# fails, where it writes: DVC tracks the outs themselves, how it writes atomically, and the
# validation and names of params: DVC tracks the values through `params:`). Listing them would
# re-run the whole pipeline, download included, for a refactor. check-params lists params.py
# and options.py, which are what it runs.
PLUMBING = {str(path.relative_to(ROOT)) for path in (ROOT / "bps" / "core").glob("*.py")}


def stage_script(stage: dict) -> Path:
    match = STAGE_COMMAND.match(stage["cmd"])
    assert match, f"stage command {stage['cmd']!r} is not `python -m stages.<name>`"
    return ROOT / (match.group(1).replace(".", "/") + ".py")


def test_the_closure_follows_transitive_and_lazy_imports():
    closure = import_closure(ROOT / "stages/evaluate.py")
    assert "bps/evaluation/scores.py" in closure  # direct
    assert "bps/models/networks.py" in closure  # imported inside a function of bps/models/loader.py
    assert "bps/core/errors.py" in closure  # through other modules


@pytest.mark.parametrize("name", sorted(PIPELINE))
def test_stage_deps_list_every_module_it_imports_and_no_other(name):
    stage = PIPELINE[name]
    script = stage_script(stage)
    deps = set(stage.get("deps", []))
    closure = import_closure(script)
    listed_modules = {dep for dep in deps if dep.startswith("bps/")}

    assert str(script.relative_to(ROOT)) in deps
    missing = sorted(closure - PLUMBING - deps)
    assert not missing, f"dvc.yaml stage {name!r} imports but does not depend on {missing}"
    stale = sorted(listed_modules - closure)
    assert not stale, f"dvc.yaml stage {name!r} depends on {stale}, which it never imports"


@pytest.mark.parametrize("name", sorted(name for name in PIPELINE if not name.endswith(":" + PARAMS_CHECK)))
def test_every_stage_runs_after_the_params_check(name):
    assert PARAMS_OK in PIPELINE[name].get("deps", []), f"stage {name!r} must list {PARAMS_OK} in its deps"


def test_the_params_check_reads_the_whole_file_and_writes_what_others_read():
    check = PIPELINE["dvc.yaml:" + PARAMS_CHECK]
    assert "params.yaml" in check["deps"]  # the whole file: a top-level typo changes it too
    assert check["outs"] == [PARAMS_OK]
    for_datasets = PIPELINE["datasets/dvc.yaml:" + PARAMS_CHECK]
    assert {"params.yaml"} <= set(for_datasets["deps"]) and for_datasets["outs"] == [{PARAMS_OK: {"cache": False}}]
