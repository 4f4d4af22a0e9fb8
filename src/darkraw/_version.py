"""The package version, kept in a leaf module so that every layer can name it."""

__version__ = "0.1.0"
