"""Experiments and command-line jobs: comparisons, FLOPs tables, figures."""
from ..errors import UsageError

__all__ = ["UsageError"]
