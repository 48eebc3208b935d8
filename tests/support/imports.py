"""The project's own imports, read from the sources with ``ast``: what the layering and dvc.yaml tests check.

A module is named by its path (``bps/data/meta.py``). ``from bps.data import s3`` imports
``bps/data/s3.py``; ``from bps.data.meta import X`` imports ``bps/data/meta.py``; imports inside
functions count too. Package ``__init__.py`` files hold only a docstring and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def module_path(dotted: str) -> str | None:
    """``bps.data.meta`` → ``bps/data/meta.py`` when that file exists (a package or a name: None)."""
    path = dotted.replace(".", "/") + ".py"
    return path if (ROOT / path).is_file() else None


def bps_imports(path: Path) -> set[str]:
    """The bps modules ``path`` imports, as paths (``bps/data/meta.py``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.startswith("bps.")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "bps":
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {module for module in map(module_path, names) if module is not None}
    return found


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
