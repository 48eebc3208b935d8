"""Scoring on the test split: metrics with grouped intervals, paired tests, the comparison report, saliency."""
