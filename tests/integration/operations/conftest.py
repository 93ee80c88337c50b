"""Fixtures of the operations tests (defined with the harnesses in ``harness.py``)."""

from __future__ import annotations

from .harness import sync

__all__ = ["sync"]
