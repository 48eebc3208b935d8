"""``python -m bps``: the user commands (bps/cli.py)."""

from bps.cli import main

main()
