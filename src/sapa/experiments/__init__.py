"""Experiments and command-line jobs: comparisons, FLOPs tables, figures."""
