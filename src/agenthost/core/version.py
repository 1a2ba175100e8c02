"""The package's version, in a module of its own so every layer can name it without importing
the package face (`agenthost/__init__.py`), which imports the turn layer."""

__all__ = ["__version__"]

__version__ = "0.1.0"
