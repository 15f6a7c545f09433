"""Dense-prediction tasks: data sets, metrics and losses, one sub-package per task."""
