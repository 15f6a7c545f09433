"""The scripts of ``benchmarks/`` are not a package: tests load them by path."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def load_benchmark():
    """``load_benchmark("cpu")`` -> the module ``benchmarks/cpu.py``."""
    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"sapa_benchmarks_{name}",
                                                      BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load
