"""What a model predicts: targets and their classes, multi-label encodings, and whole-split metrics."""
