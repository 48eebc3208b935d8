"""serve: class probabilities for uploaded TIFFs over HTTP, from a trained model folder.

    python -m stages.serve models/lenet --host 127.0.0.1 --port 8000
    curl -F files=@a.tif -F files=@b.tif http://127.0.0.1:8000/predict

GET /health, GET /model (target, classes, architecture, training, preprocessing, metrics) and
POST /predict (multipart field "files"), answering with the numbers `python -m stages.predict`
writes for the same files. The model loads before the server listens: a bad model folder stops
with one error line. See bps/service.py for the status codes.
"""

import argparse
import sys
from pathlib import Path

import uvicorn

from bps.errors import PipelineError
from bps.http_protocol import HEADER_TIMEOUT, with_header_timeout
from bps.service import (
    BODY_TIMEOUT,
    MAX_IMAGE_SIDE,
    MAX_INFLIGHT_BYTES,
    MAX_PENDING,
    MAX_REQUEST_BYTES,
    WORKERS,
    create_app,
)


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.serve", description=__doc__.splitlines()[0])
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
        )
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    uvicorn.run(app, host=args.host, port=args.port, http=with_header_timeout(args.header_timeout))


if __name__ == "__main__":
    main()
