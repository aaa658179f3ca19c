"""scarce: pretraining language models when unique data is the limit and compute is not."""

__version__ = "0.1.0"
