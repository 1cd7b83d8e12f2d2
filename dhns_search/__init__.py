"""dhns-search: hyperparameter search for DHNS on multimodal knowledge graphs."""

__version__ = "0.1.0"

__all__ = ["__version__"]
