"""Run every benchmark and print one table: ``python -m benchmarks [--quick] [--json PATH] [--markdown PATH]``.

``full_size`` (the whole pipeline on 77,180 simulated images) runs only when named:
``python -m benchmarks --only full_size [--images-per-condition N]``.

Each ratio is measured side by side in the same run, on the same generated data, so machine
noise hits both sides alike. Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import Row

# Each benchmark runs in a fresh interpreter: none pays for another's imports, threads or memory
# (forking workers from a process that has torch or boto3 loaded, for one, is slower than forking
# from a lean stage process, which is what the pipeline does).
SUITE = {
    "simulate": ("benchmarks.bench_simulate", "run"),
    "download": ("benchmarks.bench_download", "run"),
    "preprocess": ("benchmarks.bench_preprocess", "run"),
    "train_input": ("benchmarks.bench_train_input", "run"),
    "max_pool": ("benchmarks.bench_pooling", "run"),
    "dvc_overhead": ("benchmarks.bench_dvc", "overhead_rows"),
    "end_to_end": ("benchmarks.bench_dvc", "end_to_end_rows"),
    "baseline_memory": ("benchmarks.bench_scale", "baseline_memory_rows"),
    "ddp": ("benchmarks.bench_scale", "ddp_rows"),
    "full_size": ("benchmarks.bench_scale", "full_size_rows"),
}
RESULTS = Path(__file__).resolve().parent / "results"  # full_size's tables, committed for the docs
ON_REQUEST = {"full_size"}  # minutes and gigabytes: run with --only
SIZED = {"full_size", "baseline_memory"}  # take --images-per-condition


def print_table(rows: list[Row]) -> None:
    width = max(len(row.name) for row in rows)
    print(f"{'name':<{width}}  {'value':>10}  {'unit':<9}  note")
    for row in rows:
        print(f"{row.name:<{width}}  {row.value:>10.2f}  {row.unit:<9}  {row.note}")


def markdown_table(rows: list[Row], argv: list[str]) -> str:
    """The rows as a Markdown table under the command and machine that made them (the docs include it)."""
    command = " ".join(["python -m benchmarks", *argv])
    lines = [
        f"`{command}` on {os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d', time.gmtime())}, "
        f"load average over the last 15 min at the end {os.getloadavg()[2]:.1f}:",
        "",
        "| name | value | unit | note |",
        "|---|---:|---|---|",
        *(f"| {row.name} | {row.value:.2f} | {row.unit} | {row.note} |" for row in rows),
    ]
    return "\n".join(lines) + "\n"


def run_here(name: str, folder: Path, quick: bool, images_per_condition: int | None,
             results: Path | None = None) -> list[Row]:
    """Run one benchmark in this interpreter, saying on stderr how long it took."""
    print(f"running {name} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    module, function = SUITE[name]
    sized = {"images_per_condition": images_per_condition} if name in SIZED else {}
    if name == "full_size" and results is not None:
        sized["results"] = results
    rows = getattr(importlib.import_module(module), function)(folder, quick, **sized)
    print(f"  {name} took {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return rows


def run_isolated(name: str, folder: Path, quick: bool, images_per_condition: int | None,
                 results: Path | None = None) -> list[Row]:
    """Run one benchmark in a child interpreter and read back its rows."""
    out = folder / "rows.json"
    command = [sys.executable, "-m", "benchmarks", "--only", name, "--json", str(out), *(["--quick"] if quick else [])]
    if images_per_condition:
        command += ["--images-per-condition", str(images_per_condition)]
    if results is not None:
        command += ["--results", str(results)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return [Row(**row) for row in json.loads(out.read_text())]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (seconds, not minutes)")
    parser.add_argument("--json", type=Path, help="also write the rows as a JSON list to this file")
    parser.add_argument("--markdown", type=Path, help="also write the rows as a Markdown table to this file")
    parser.add_argument("--only", choices=sorted(SUITE), action="append", help="run only these benchmarks")
    parser.add_argument("--images-per-condition", type=int, metavar="N",
                        help="size of full_size and baseline_memory (default 4540: 77,180 images; --quick: 8)")
    parser.add_argument("--results", type=Path, help="where full_size writes its table as full_size_<N>.json "
                        "and .md (default benchmarks/results; with --quick, nowhere)")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    results = args.results or (None if args.quick else RESULTS)
    names = args.only or [name for name in SUITE if name not in ON_REQUEST]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bps-bench-") as scratch:
        for name in names:
            folder = Path(scratch) / name
            folder.mkdir()
            run = run_here if len(names) == 1 else run_isolated
            rows += run(name, folder, args.quick, args.images_per_condition, results)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps([row.as_dict() for row in rows], indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown_table(rows, argv))


if __name__ == "__main__":
    main()
