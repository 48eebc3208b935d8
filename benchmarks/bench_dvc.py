"""DVC's own cost: no-op ``dvc repro`` / ``dvc status`` over many tracked files, and a full run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import yaml

from benchmarks.common import Row, best_of_each
from bps.core.params import with_key

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


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


# Wraps a command (a stage's, inside the one `dvc repro`): when it started and ended, its peak RSS and
# its peak anonymous memory. Run by path: the project copies it runs in have no benchmarks/.
CLOCK = [sys.executable, str(Path(__file__).with_name("clock.py"))]


def end_to_end_rows(workdir: Path, quick: bool) -> list[Row]:
    """``dvc repro`` of the defaults from scratch, stage by stage, with each stage's peak memory."""
    return stage_rows(project_copy(workdir / "e2e", QUICK if quick else {}), "e2e")


@dataclass(frozen=True)
class StageRun:
    """One stage of a timed ``dvc repro``: ``seconds`` with DVC's own work for it, of which ``command_s``
    its command alone; ``rss_mb`` the peak RSS of the command's largest process, ``anon_mb`` the peak of
    its anonymous memory (RSS less the file-backed pages, such as a memory-mapped array's)."""

    stage: str
    seconds: float
    command_s: float
    rss_mb: float
    anon_mb: float


def stage_runs(root: Path, prefix: str) -> tuple[list[StageRun], float]:
    """One ``dvc repro`` of a project from scratch, as a user runs it, each stage's command wrapped in
    :data:`CLOCK`: every stage's times and peak RSS (MiB), and the whole command's seconds."""
    clocks = root.parent / f"{root.name}-clocks"
    clocks.mkdir()
    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())
    for stage, spec in pipeline["stages"].items():
        spec["cmd"] = " ".join([*CLOCK, f"{clocks / stage}.json", spec["cmd"]])
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    _commit(root)
    start = time.time()
    _run(str(BIN / "dvc"), "repro", "-q", cwd=root)
    end = time.time()
    clock = {stage: json.loads((clocks / f"{stage}.json").read_text()) for stage in pipeline["stages"]}
    order = sorted(clock, key=lambda stage: clock[stage]["start"])
    # A stage's seconds run from its command's start (dvc's own start, for the first) to the next one's,
    # so that DVC hashing and caching its outputs counts as its own (with the next stage's checks).
    marks = [start] + [clock[stage]["start"] for stage in order[1:]] + [end]
    runs = [StageRun(stage, marks[i + 1] - marks[i], clock[stage]["end"] - clock[stage]["start"],
                     clock[stage]["rss_kib"] / 1024, clock[stage]["anon_kib"] / 1024)
            for i, stage in enumerate(order)]
    runs.sort(key=lambda run: list(pipeline["stages"]).index(run.stage))  # dvc.yaml's order, as the docs list it
    for run in runs:
        print(f"  {prefix} {run.stage}: {run.seconds:.1f} s ({run.command_s:.1f} s its command), "
              f"peak RSS {run.rss_mb:.0f} MiB ({run.anon_mb:.0f} MiB anonymous)", file=sys.stderr, flush=True)
    return runs, end - start


def accuracy_note(root: Path) -> str:
    """Each scored model's test accuracy, from the project's metrics/evaluate.json."""
    scores = json.loads((root / "metrics" / "evaluate.json").read_text())
    # The paired tests ("paired", "paired_irradiated") sit beside the models and have no accuracy of their own.
    return ", ".join(f"{model} {values['accuracy']:.3f}" for model, values in scores.items() if "accuracy" in values)


def stage_rows(root: Path, prefix: str, timed: tuple[list[StageRun], float] | None = None) -> list[Row]:
    """Each stage's seconds (its command's and peak RSS in the note), then the whole ``dvc repro``;
    ``timed`` as :func:`stage_runs` returns it, or run now."""
    runs, total = stage_runs(root, prefix) if timed is None else timed
    rows = [Row(f"{prefix}_{run.stage}_s", run.seconds, "s",
                f"{run.command_s:.1f} s its command; peak RSS {run.rss_mb:.0f} MiB, {run.anon_mb:.0f} MiB anonymous")
            for run in runs]
    rows.append(Row(f"{prefix}_dvc_repro_s", total, "s", f"one dvc repro; test accuracy: {accuracy_note(root)}"))
    return rows
