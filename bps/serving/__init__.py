"""Predictions for new images: the predictor, and the HTTP service with its admission limits."""
