"""The package metadata and the exact pins agree, so `pip install -r requirements.txt` sets up everything."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    pins = {}
    for line in filter(None, lines):
        if line.startswith("-e"):
            continue
        requirement = Requirement(line)
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"requirements.txt: {line} is not an exact pin"
        pins[canonicalize_name(requirement.name)] = spec.version
    return pins


def test_requirements_install_the_project_itself():
    lines = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert "-e ." in lines


def test_the_declared_dependencies_and_the_pins_are_the_same_set_and_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [dep for extra in project["optional-dependencies"].values() for dep in extra]
    pins = _pins()
    names = set()
    for line in declared:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name == canonicalize_name(project["name"]):
            continue  # an extra that pulls in another extra
        names.add(name)
        assert name in pins, f"{line}: declared in pyproject.toml but not pinned in requirements.txt"
        assert requirement.specifier.contains(pins[name]), f"{line}: requirements.txt pins {pins[name]}"
    assert not set(pins) - names, f"pinned in requirements.txt but not declared in pyproject.toml: {set(pins) - names}"


def test_the_bps_command_is_the_cli():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"bps": "bps.cli:main"}
