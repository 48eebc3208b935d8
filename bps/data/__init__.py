"""Getting images and their labels: BPS metadata, S3, splits, TIFF decoding, the prepared arrays."""
