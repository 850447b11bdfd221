"""ica_hub: In-Context Approximation (ICA) scores and example weights for fine-tuning data."""

__version__ = "0.1.0"
