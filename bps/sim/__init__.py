"""The offline BPS simulator: rendering, foci physics, plate confounds, and how it is checked against the real crop."""
