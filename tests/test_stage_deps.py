"""dvc.yaml's deps follow the code: each stage lists the bps/ modules it imports, and nothing stale.

The import closure is computed from the sources (every ``import bps.x`` / ``from bps import x``
/ ``from bps.x import y``, at any depth, followed transitively), so a stage added or changed by
anyone is checked the day it lands.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
STAGE_COMMAND = re.compile(r"^python -m (stages\.\w+)\b")
PARAMS_CHECK = "check-params"
PARAMS_OK = "data/params.ok"
# Modules that cannot change a stage's numbers: how a stage starts and fails (cli, errors), where
# it writes (layout: DVC tracks the outs themselves), how it writes atomically (files), and the
# validation and names of params (params, options: DVC tracks the values through `params:`).
# Listing them would re-run the whole pipeline, download included, for a refactor. check-params
# lists params.py and options.py, which are what it runs.
PLUMBING = {"bps/cli.py", "bps/errors.py", "bps/files.py", "bps/layout.py", "bps/params.py", "bps/options.py"}


def bps_imports(path: Path) -> set[str]:
    """The bps modules ``path`` imports, as ``bps/name.py`` (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("bps.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "bps":
                found |= {f"bps.{alias.name}" for alias in node.names}
            elif node.module.startswith("bps."):
                found.add(node.module)
    return {name.replace(".", "/") + ".py" for name in found}


def import_closure(script: Path) -> set[str]:
    """Every bps module that running ``script`` imports, directly or through other bps modules."""
    seen: set[str] = set()
    todo = list(bps_imports(script))
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += bps_imports(ROOT / module)
    return seen


def stage_script(stage: dict) -> Path:
    match = STAGE_COMMAND.match(stage["cmd"])
    assert match, f"stage command {stage['cmd']!r} is not `python -m stages.<name>`"
    return ROOT / (match.group(1).replace(".", "/") + ".py")


def test_the_closure_follows_transitive_and_lazy_imports():
    closure = import_closure(ROOT / "stages/predict.py")
    assert "bps/predict.py" in closure  # direct
    assert "bps/models.py" in closure  # imported inside a function of bps/predict.py
    assert "bps/errors.py" in closure  # through other modules


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


@pytest.mark.parametrize("name", sorted(set(PIPELINE) - {PARAMS_CHECK}))
def test_every_stage_runs_after_the_params_check(name):
    assert PARAMS_OK in PIPELINE[name].get("deps", []), f"stage {name!r} must list {PARAMS_OK} in its deps"


def test_the_params_check_reads_the_whole_file_and_writes_what_others_read():
    check = PIPELINE[PARAMS_CHECK]
    assert "params.yaml" in check["deps"]  # the whole file: a top-level typo changes it too
    assert check["outs"] == [PARAMS_OK]
