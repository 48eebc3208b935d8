"""predict: class probabilities for new TIFFs from a trained model folder.

    python -m stages.predict models/lenet new_images/ more.tif --out predictions.csv
    python -m stages.predict models/lenet red.png green.png blue.png yellow.png   # a 4-channel HPA model

Uses the preprocessing stored with the model (model.json), not today's params.yaml. Writes a
CSV (or JSON, by the --out suffix) with one row per image: file, predicted class, and each
class's probability. A model trained on a layout takes each sample's channel files in the
order its card lists (``channels``), several samples one after another; a multi-label model's
``predicted`` holds the labels over their thresholds.
"""

import argparse
import os
import sys
from pathlib import Path

from bps.errors import PipelineError
from bps.files import write_text
from bps.predict import Predictor, find_tiffs

OUTPUT_SUFFIXES = (".csv", ".json")


def check_output(path: Path) -> None:
    """Refuse an --out that cannot be written, before the images are read rather than after."""
    if path.is_dir():
        raise PipelineError(f"--out {path}: is a folder; name a file ending in .csv or .json")
    if path.suffix not in OUTPUT_SUFFIXES:
        raise PipelineError(f"--out {path}: unknown format {path.suffix!r}; name a file ending in .csv or .json")
    folder = next(parent for parent in path.absolute().parents if parent.exists())
    if not folder.is_dir():
        raise PipelineError(f"--out {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PipelineError(f"--out {path}: cannot write in {folder} (permission denied)")


def channel_files(paths: list[Path]) -> list[Path]:
    """A layout model's inputs: files as given (a folder has no channel order), each one present."""
    for path in paths:
        if not path.is_file():
            raise PipelineError(f"{path}: no such file (a layout model takes each channel's file, in order)")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.predict", description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a trained model folder, e.g. models/lenet or models/baseline")
    parser.add_argument("inputs", nargs="+", type=Path,
                        help="TIFF files and/or folders searched for *.tif; a layout model: each sample's channel "
                             "files, in the order of its model.json's channels")
    parser.add_argument("--out", type=Path, default=Path("predictions.csv"), help="output .csv or .json")
    args = parser.parse_args(argv)
    try:
        check_output(args.out)
        predictor = Predictor(args.model)
        table = predictor.predict_files(channel_files(args.inputs) if predictor.layout else find_tiffs(args.inputs))
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    if args.out.suffix == ".json":
        write_text(args.out, table.to_json(orient="records", indent=2) + "\n")
    else:
        write_text(args.out, table.to_csv(index=False))
    counts = table["predicted"].value_counts().to_dict()
    print(f"predict: {len(table)} images → {args.out} ({counts})")


if __name__ == "__main__":
    main()
