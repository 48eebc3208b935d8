"""The root of the errors that mean "the input is wrong", not "the code is broken"."""


class PipelineError(Exception):
    """Its message alone tells the user what to fix, so stages print it without a traceback."""
