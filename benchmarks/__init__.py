"""Side-by-side speed measurements of the pipeline's hot paths: ``python -m benchmarks``."""
