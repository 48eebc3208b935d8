"""check-params: validate the whole params.yaml before any other stage runs.

DVC deletes a stage's outputs just before it runs the stage, so a stage that only then found a
bad parameter had already lost its outputs (``models/lenet``, the git-tracked ``metrics/lenet``).
This stage depends on the whole ``params.yaml`` file (so a top-level typo such as ``trian:``
counts too), and every other stage depends on its output, so DVC runs it first. Its output's
bytes never change: after a valid edit DVC re-runs only the stages whose own params changed.
With ``data.source: layout`` it also reads the layout's metadata (from its folder or S3).
"""

from bps.core.files import write_text
from bps.core.params import Params
from bps.core.paths import PARAMS_OK
from bps.core.stage import run_stage
from bps.data.layouts.source import load_layout


def main(params: Params) -> None:
    # run_stage has validated every key; a layout's keys are checked against its metadata too
    # (a template placeholder, id, label, group or control column the metadata lacks).
    if params.data.source == "layout":
        load_layout(params.data)
    write_text(PARAMS_OK, "params.yaml is valid\n")


if __name__ == "__main__":
    run_stage(main)
