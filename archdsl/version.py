"""archdsl's version (pyproject.toml holds the same string; a test compares them)."""

__version__ = "0.1.0"
