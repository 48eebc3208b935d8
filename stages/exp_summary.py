"""exp_summary: mean ± SD of each metric across DVC experiments, e.g. one per seed.

    dvc exp run --queue -S 'train.seed=range(0, 5)' && dvc queue start -j 1   # then, when done:
    python -m stages.exp_summary                          # every experiment in `dvc exp show`
    python -m stages.exp_summary --metrics 'lenet\\.(accuracy|macro_f1|control\\.leakage)$'
    python -m stages.exp_summary --json shown.json        # a saved `dvc exp show --json`

Not a pipeline stage: it reads what DVC recorded for finished experiments.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bps.experiments import experiments, spread, varied_params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.exp_summary", description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="a saved `dvc exp show --json` (default: run it now)")
    parser.add_argument("--metrics", default=r"\.(accuracy|balanced_accuracy|macro_f1|sham_accuracy|leakage)$",
                        help="regular expression picking metric keys (default: the headline ones)")
    parser.add_argument("--file", default="metrics/evaluate.json", help="the metrics file to read")
    args = parser.parse_args(argv)
    if args.json:
        shown = json.loads(args.json.read_text())
    else:
        result = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True)
        if result.returncode != 0:
            print(f"error: `dvc exp show --json` failed: {result.stderr.strip()}", file=sys.stderr)
            raise SystemExit(1)
        shown = json.loads(result.stdout)
    found = experiments(shown, args.file)
    if len(found) < 2:
        print(f"error: {len(found)} finished experiment(s) with {args.file}; queue at least two "
              "(dvc exp run --queue -S 'train.seed=range(0, 5)' && dvc queue start)", file=sys.stderr)
        raise SystemExit(1)
    varied = ", ".join(f"{key} = {values}" for key, values in varied_params(found).items()) or "nothing"
    print(f"{len(found)} experiments ({', '.join(e['name'] for e in found)}); params varied: {varied}\n")
    print(f"{'metric':<40} {'n':>3}  {'mean ± SD':>17}  {'min':>7}  {'max':>7}")
    for row in spread(found, args.metrics):
        print(f"{row['metric']:<40} {row['n']:>3}  {row['mean']:>7.4f} ± {row['sd']:<7.4f}  "
              f"{row['min']:>7.4f}  {row['max']:>7.4f}")


if __name__ == "__main__":
    main()
