"""The models and their files: networks, the MLP, model cards, skops files, inference and one loader."""
