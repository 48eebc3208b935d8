"""Shared library of the BPS Microscopy pipeline: the stages in ``stages/`` import it, never each other."""
