"""Training: batches and augmentation, the CNN loop, data-parallel processes, lr range test, negative controls."""
