"""Getting images and their labels: BPS metadata, S3, the simulator's files, splits, TIFF decoding, the prepared arrays."""
