"""The plumbing every part shares: params and their option names, output paths, errors, atomic files,
the stage runner."""
