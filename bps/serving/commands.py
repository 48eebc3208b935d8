"""The ``predict`` and ``serve`` commands of ``python -m bps``: a trained model folder on new images.

    python -m bps predict models/lenet new_images/ more.tif --out predictions.csv
    python -m bps predict models/lenet red.png green.png blue.png yellow.png   # a 4-channel HPA model
    python -m bps serve models/lenet --host 127.0.0.1 --port 8000
    curl -F files=@a.tif -F files=@b.tif http://127.0.0.1:8000/predict

Both use the preprocessing stored with the model (model.json), not today's params.yaml. predict
writes a CSV (or JSON, by the --out suffix) with one row per image: file, predicted class, and
each class's probability. A model trained on a layout takes each sample's channel files in the
order its card lists (``channels``), several samples one after another; a multi-label model's
``predicted`` holds the labels over their thresholds. serve answers GET /health, GET /model and
POST /predict (multipart field "files") with the numbers predict writes for the same files; the
model loads before the server listens, so a bad model folder stops with one error line. See
bps/serving/app.py for the status codes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bps.core.errors import PipelineError
from bps.core.files import write_text
from bps.serving.predictor import Predictor, find_tiffs

PREDICT_HELP = "class probabilities for new images from a trained model folder"
SERVE_HELP = "serve a trained model's predictions over HTTP"
OUTPUT_SUFFIXES = (".csv", ".json")


NAME_MAX = 255  # bytes in one file or folder name (Linux, macOS); longer names fail with an OSError


def check_name_lengths(paths: list[Path], what: str) -> None:
    """Refuse a path with a name over NAME_MAX bytes, which every file system call would fail on."""
    for path in paths:
        longest = max(path.parts, key=lambda part: len(os.fsencode(part)), default="")
        if len(os.fsencode(longest)) > NAME_MAX:
            raise PipelineError(f"{what} {str(path)[:60]}…: a name in it is {len(os.fsencode(longest))} bytes; "
                                f"at most {NAME_MAX} bytes per file or folder name")


def check_output(path: Path) -> None:
    """Refuse an --out that cannot be written, before the images are read rather than after."""
    check_name_lengths([path], "--out")
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


def predict(argv: list[str] | None = None) -> None:
    """``python -m bps predict``: class probabilities for new images, written to --out."""
    parser = argparse.ArgumentParser(prog="python -m bps predict", description=PREDICT_HELP)
    parser.add_argument("model", type=Path, help="a trained model folder, e.g. models/lenet or models/baseline")
    parser.add_argument("inputs", nargs="+", type=Path,
                        help="TIFF files and/or folders searched for *.tif; a layout model: each sample's channel "
                             "files, in the order of its model.json's channels")
    parser.add_argument("--out", type=Path, default=Path("predictions.csv"), help="output .csv or .json")
    args = parser.parse_args(argv)
    try:
        check_output(args.out)
        check_name_lengths(args.inputs, "input")
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


def positive_int(text: str) -> int:
    """argparse type: an integer > 0, so a typo fails with usage instead of a server that refuses everything."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number of seconds > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def serve(argv: list[str] | None = None) -> None:
    """``python -m bps serve``: the model over HTTP until interrupted."""
    import uvicorn  # here: predict never needs the web stack

    from bps.serving.app import (
        BODY_TIMEOUT,
        MAX_IMAGE_SIDE,
        MAX_INFLIGHT_BYTES,
        MAX_INFLIGHT_PIXELS,
        MAX_PENDING,
        MAX_REQUEST_BYTES,
        MAX_REQUEST_PIXELS,
        WORKERS,
        create_app,
    )
    from bps.serving.http_protocol import HEADER_TIMEOUT, with_header_timeout

    parser = argparse.ArgumentParser(prog="python -m bps serve", description=SERVE_HELP)
    parser.add_argument("model", type=Path, help="a trained model folder, e.g. models/lenet or models/baseline")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument(
        "--max-request-bytes",
        type=positive_int,
        default=MAX_REQUEST_BYTES,
        help="largest request body accepted (413 above)",
    )
    parser.add_argument(
        "--max-image-side",
        type=positive_int,
        default=MAX_IMAGE_SIDE,
        help="largest image side in pixels accepted (413 above)",
    )
    parser.add_argument(
        "--max-request-pixels",
        type=positive_int,
        default=MAX_REQUEST_PIXELS,
        help="pixels a request's image headers may declare in all (413 above; default %(default)s)",
    )
    parser.add_argument(
        "--max-inflight-pixels",
        type=positive_int,
        default=MAX_INFLIGHT_PIXELS,
        help="declared pixels of the requests admitted to decode, in total; more get 503 (default %(default)s)",
    )
    parser.add_argument(
        "--max-pending",
        type=positive_int,
        default=MAX_PENDING,
        help="requests with a body in progress at once; more get 503 (default %(default)s)",
    )
    parser.add_argument(
        "--max-inflight-bytes",
        type=positive_int,
        default=MAX_INFLIGHT_BYTES,
        help="request bodies in progress, in total; more get 503 (default %(default)s, at least --max-request-bytes)",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=WORKERS,
        help="requests decoded and predicted at once; the others wait (default %(default)s)",
    )
    parser.add_argument(
        "--body-timeout",
        type=positive_float,
        default=BODY_TIMEOUT,
        help="seconds a request body may take to arrive; slower ones get 408 (default %(default)s)",
    )
    parser.add_argument(
        "--header-timeout",
        type=positive_float,
        default=HEADER_TIMEOUT,
        help="seconds a request's headers may take to arrive; slower connections are closed (default %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        app = create_app(
            args.model,
            args.max_request_bytes,
            args.max_image_side,
            max_pending=args.max_pending,
            max_inflight_bytes=args.max_inflight_bytes,
            workers=args.workers,
            body_timeout=args.body_timeout,
            max_request_pixels=args.max_request_pixels,
            max_inflight_pixels=args.max_inflight_pixels,
        )
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    uvicorn.run(app, host=args.host, port=args.port, http=with_header_timeout(args.header_timeout))
