"""The search's own user-facing error: a one-paragraph message, never a traceback (the CLI exits 1)."""

from __future__ import annotations

__all__ = ["SearchError"]


class SearchError(Exception):
    """An impossible search (no open choice, every sampled point rejected, a bad budget or option)."""
