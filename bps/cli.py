"""How a stage script starts and fails: validated params first, one clear line on bad input."""

from __future__ import annotations

import sys
from collections.abc import Callable

from bps.errors import PipelineError
from bps.params import Params, load_params


def run_stage(main: Callable[[Params], None]) -> None:
    """Validate params.yaml, run ``main``, and turn input errors into a message and exit 1."""
    try:
        main(load_params())
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
