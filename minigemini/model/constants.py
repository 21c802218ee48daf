"""Constants shared by the model and the data code (model/ must not import data/, so they live here)."""

IGNORE_INDEX = -100  # label of a token that is not supervised (PyTorch cross-entropy's ignore_index)
