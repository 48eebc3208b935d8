"""DVC's own cost: no-op ``dvc repro`` / ``dvc status`` over many tracked files, and a full run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from functools import partial
from pathlib import Path

import yaml

from benchmarks.common import Row, best_of_each
from bps.core.params import with_key

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGES = tuple(yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"])  # written in an order that runs


def _env() -> dict[str, str]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.update(
        GIT_AUTHOR_NAME="bench",
        GIT_AUTHOR_EMAIL="bench@localhost",
        GIT_COMMITTER_NAME="bench",
        GIT_COMMITTER_EMAIL="bench@localhost",
    )
    return env


def _run(*command: str, cwd: Path) -> str:
    done = subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed in {cwd}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _init_repo(root: Path) -> None:
    _run("git", "init", "-q", cwd=root)
    _run(str(BIN / "dvc"), "init", "-q", cwd=root)


def _commit(root: Path) -> None:
    _run("git", "add", "-A", cwd=root)
    _run("git", "commit", "-qm", "bench", cwd=root)


def files_repo(root: Path, count: int) -> Path:
    """A repo whose one stage writes ``count`` small files into a tracked folder."""
    root.mkdir(parents=True)
    _init_repo(root)
    (root / "make_files.py").write_text(
        textwrap.dedent(f"""
        from pathlib import Path
        Path("files").mkdir()
        for i in range({count}):
            Path(f"files/img_{{i:06d}}.tif").write_bytes(i.to_bytes(4, "little") * 256)
    """)
    )
    (root / "dvc.yaml").write_text(
        yaml.safe_dump(
            {"stages": {"make": {"cmd": "python make_files.py", "deps": ["make_files.py"], "outs": ["files"]}}}
        )
    )
    _commit(root)
    _run(str(BIN / "dvc"), "repro", "-q", cwd=root)
    _commit(root)
    return root


def overhead_rows(workdir: Path, quick: bool) -> list[Row]:
    small, large = (200, 2000) if quick else (2000, 20000)
    times = {}
    for count in (small, large):
        root = files_repo(workdir / f"dvc-{count}", count)
        best = best_of_each({verb: partial(_run, str(BIN / "dvc"), verb, cwd=root) for verb in ("repro", "status")}, 3)
        times[count] = (best["repro"], best["status"])
    return [
        Row("dvc_noop_repro_s", times[large][0], "s", f"{large} tracked files; {small} files: {times[small][0]:.2f} s"),
        Row("dvc_status_s", times[large][1], "s", f"{large} tracked files; {small} files: {times[small][1]:.2f} s"),
        Row("dvc_noop_repro_growth", times[large][0] / times[small][0], "x", f"{small} → {large} files"),
    ]


QUICK = {("data", "synthetic", "images_per_condition"): 20, ("train", "epochs"): 1, ("baseline", "epochs"): 1}


def set_params(root: Path, changes: dict[tuple[str, ...], object]) -> None:
    """Change some keys of a project's params.yaml (each key a path of names)."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    for keys, value in changes.items():
        params = with_key(params, keys, value)
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def project_copy(root: Path, changes: dict[tuple[str, ...], object]) -> Path:
    """This project's sources (no lock, metrics, tests or benchmarks) in a new git repo, params changed."""
    files = _run("git", "ls-files", cwd=PROJECT).split()
    files += _run("git", "ls-files", "--others", "--exclude-standard", cwd=PROJECT).split()
    for name in files:
        if name == "dvc.lock" or name.startswith(("metrics/", "tests/", "benchmarks/")):
            continue
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((PROJECT / name).read_bytes())
    set_params(root, changes)
    _run("git", "init", "-q", cwd=root)
    _commit(root)
    return root


PEAK_RSS = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def end_to_end_rows(workdir: Path, quick: bool) -> list[Row]:
    """``dvc repro`` of the defaults from scratch, stage by stage, with each stage's peak memory."""
    return stage_rows(project_copy(workdir / "e2e", QUICK if quick else {}), "e2e")


def stage_runs(root: Path, prefix: str) -> list[tuple[str, float, float]]:
    """Reproduce a project stage by stage: each stage's name, seconds and peak RSS (MiB)."""
    runs = []
    for stage in STAGES:
        start = time.perf_counter()
        output = _run(sys.executable, "-c", PEAK_RSS, str(BIN / "dvc"), "repro", "-s", "-q", stage, cwd=root)
        seconds = time.perf_counter() - start
        rss_mb = int(output.split()[-1]) / 1024
        runs.append((stage, seconds, rss_mb))
        print(f"  {prefix} {stage}: {seconds:.1f} s, peak RSS {rss_mb:.0f} MiB", file=sys.stderr, flush=True)
    return runs


def accuracy_note(root: Path) -> str:
    """Each scored model's test accuracy, from the project's metrics/evaluate.json."""
    scores = json.loads((root / "metrics" / "evaluate.json").read_text())
    return ", ".join(f"{model} {values['accuracy']:.3f}" for model, values in scores.items() if model != "paired")


def stage_rows(root: Path, prefix: str, runs: list[tuple[str, float, float]] | None = None) -> list[Row]:
    """Each stage's seconds (peak RSS in the note), then the total; ``runs`` as stage_runs returns them, or run now."""
    runs = stage_runs(root, prefix) if runs is None else runs
    rows = [Row(f"{prefix}_{stage}_s", seconds, "s", f"peak RSS {rss_mb:.0f} MiB") for stage, seconds, rss_mb in runs]
    rows.append(Row(f"{prefix}_dvc_repro_s", sum(seconds for _, seconds, _ in runs), "s",
                    f"test accuracy: {accuracy_note(root)}"))
    return rows
