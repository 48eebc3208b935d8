"""How a stage script starts and fails: validated params first, one clear line on bad input."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bps.errors import PipelineError
from bps.files import write_text
from bps.params import Params, load_params

NOT_APPLICABLE_FILE = "NOT_APPLICABLE.md"



class LayoutNotSupportedError(PipelineError):
    """The stage has no multi-channel (``data.source: layout``) path yet."""


def stage_name(argv: list[str]) -> str:
    """The running stage as dvc.yaml names it: ``python -m stages.train_lenet --control`` is train-lenet-control."""
    return "-".join([Path(argv[0]).stem, *argv[1:]]).replace("_", "-").replace("--", "")


@dataclass(frozen=True)
class BpsOnly:
    """A stage with nothing to do on a layout: why, and the outs (dvc.yaml) it still writes, so
    that ``dvc repro`` runs every stage on any source."""

    why: str
    outs: Sequence[Path]

    def write(self, stage: str) -> None:
        """One NOT_APPLICABLE.md per out folder, saying why it holds nothing else."""
        for folder in self.outs:
            write_text(Path(folder) / NOT_APPLICABLE_FILE,
                       f"# {stage}: not applicable to data.source layout\n\n{self.why}\n")
        print(f"{stage}: not applicable to data.source layout (see {NOT_APPLICABLE_FILE} in "
              f"{', '.join(str(folder) for folder in self.outs)})")


def run_stage(main: Callable[[Params], None], layouts: bool = False, bps_only: BpsOnly | None = None) -> None:
    """Validate params.yaml, run ``main``, and turn input errors into a message and exit 1.

    A stage that does not say it handles ``data.source: layout`` (``layouts``) stops on one with
    one line, instead of failing somewhere inside on columns that BPS tables have; one that is
    ``bps_only`` writes its reason into its outs instead, and succeeds.
    """
    try:
        params = load_params()
        if params.data.source == "layout" and bps_only is not None:
            bps_only.write(stage_name(sys.argv))
            return
        if params.data.source == "layout" and not layouts:
            raise LayoutNotSupportedError(f"data.source layout: {stage_name(sys.argv)} supports BPS only so far")
        main(params)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
