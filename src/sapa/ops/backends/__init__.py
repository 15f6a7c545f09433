"""The backends of the ops, one package each: ``reference``, ``lean``, ``numba``, ``triton``."""
