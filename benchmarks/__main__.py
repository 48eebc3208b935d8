"""Run every benchmark and print one table: ``python -m benchmarks [--quick] [--json PATH]``.

Each ratio is measured side by side in the same run, on the same generated data, so machine
noise hits both sides alike. Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import importlib
import json
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
    "dvc_overhead": ("benchmarks.bench_dvc", "overhead_rows"),
    "end_to_end": ("benchmarks.bench_dvc", "end_to_end_rows"),
}


def print_table(rows: list[Row]) -> None:
    width = max(len(row.name) for row in rows)
    print(f"{'name':<{width}}  {'value':>10}  {'unit':<9}  note")
    for row in rows:
        print(f"{row.name:<{width}}  {row.value:>10.2f}  {row.unit:<9}  {row.note}")


def run_here(name: str, folder: Path, quick: bool) -> list[Row]:
    """Run one benchmark in this interpreter, saying on stderr how long it took."""
    print(f"running {name} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    module, function = SUITE[name]
    rows = getattr(importlib.import_module(module), function)(folder, quick)
    print(f"  {name} took {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return rows


def run_isolated(name: str, folder: Path, quick: bool) -> list[Row]:
    """Run one benchmark in a child interpreter and read back its rows."""
    out = folder / "rows.json"
    command = [sys.executable, "-m", "benchmarks", "--only", name, "--json", str(out), *(["--quick"] if quick else [])]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return [Row(**row) for row in json.loads(out.read_text())]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (seconds, not minutes)")
    parser.add_argument("--json", type=Path, help="also write the rows as a JSON list to this file")
    parser.add_argument("--only", choices=sorted(SUITE), action="append", help="run only these benchmarks")
    args = parser.parse_args(argv)
    names = args.only or list(SUITE)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bps-bench-") as scratch:
        for name in names:
            folder = Path(scratch) / name
            folder.mkdir()
            rows += run_here(name, folder, args.quick) if len(names) == 1 else run_isolated(name, folder, args.quick)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps([row.as_dict() for row in rows], indent=2) + "\n")


if __name__ == "__main__":
    main()
