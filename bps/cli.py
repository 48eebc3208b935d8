"""The user commands, one entry point: ``python -m bps <command> --help``.

The pipeline's stages run through ``dvc repro`` (``stages/``); these are the tools around it.
Each command imports only what it needs, so ``python -m bps --help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def _predict(argv: list[str]) -> None:
    from bps.serving.commands import predict

    predict(argv)


def _serve(argv: list[str]) -> None:
    from bps.serving.commands import serve

    serve(argv)


def _exp_summary(argv: list[str]) -> None:
    from bps.evaluation.experiments import main

    main(argv)


def _realism(argv: list[str]) -> None:
    from bps.sim.realism import main

    main(argv)


def _sham_probe(argv: list[str]) -> None:
    from bps.sim.sham_probe import main

    main(argv)


def _plate_looks(argv: list[str]) -> None:
    from bps.sim.plate_looks import main

    main(argv)


def _toy_data(argv: list[str]) -> None:
    from bps.data.layouts.toy import main

    main(argv)


COMMANDS: dict[str, tuple[Callable[[list[str]], None], str]] = {
    "predict": (_predict, "class probabilities for new images from a trained model folder"),
    "serve": (_serve, "serve a trained model's predictions over HTTP"),
    "exp-summary": (_exp_summary, "mean ± SD of every metric across DVC experiments (e.g. one per seed); "
                                  "--by PARAM --intervals: the plate-drift stress test"),
    "realism": (_realism, "the simulator's crops measured against the real one (a Markdown table)"),
    "sham-probe": (_sham_probe, "how much of the simulated plate signal each split protocol lets through"),
    "plate-looks": (_plate_looks, "each simulated plate's staining, background, focus blur and chromatin contrast"),
    "toy-data": (_toy_data, "write a small offline dataset in the HPA or RxRx1 layout"),
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m bps", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {name:<12} {text}" for name, (_, text) in COMMANDS.items()),
    )
    parser.add_argument("command", choices=COMMANDS, metavar="command", help="one of the commands below; "
                        "its own arguments follow it (python -m bps predict --help)")
    if not argv or argv[0].startswith("-"):
        parser.parse_args(argv)  # --help, or the usage error for no command
    command = parser.parse_args(argv[:1]).command
    COMMANDS[command][0](argv[1:])
