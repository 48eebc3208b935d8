"""Classical baselines: nucleus and focus detection, per-image features, and the appearance and foci models."""
