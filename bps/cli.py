"""How a stage script starts and fails: validated params first, one clear line on bad input."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from bps.errors import PipelineError
from bps.params import Params, load_params


class LayoutNotSupportedError(PipelineError):
    """The stage has no multi-channel (``data.source: layout``) path yet."""


def stage_name(argv: list[str]) -> str:
    """The running stage as dvc.yaml names it: ``python -m stages.train_lenet --control`` is train-lenet-control."""
    return "-".join([Path(argv[0]).stem, *argv[1:]]).replace("_", "-").replace("--", "")


def run_stage(main: Callable[[Params], None], layouts: bool = False) -> None:
    """Validate params.yaml, run ``main``, and turn input errors into a message and exit 1.

    A stage that does not say it handles ``data.source: layout`` (``layouts``) stops on one with
    one line, instead of failing somewhere inside on columns that BPS tables have.
    """
    try:
        params = load_params()
        if params.data.source == "layout" and not layouts:
            raise LayoutNotSupportedError(f"data.source layout: {stage_name(sys.argv)} supports BPS only so far")
        main(params)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
