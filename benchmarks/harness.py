"""Shared measuring helpers for the scripts in ``benchmarks/``.

Timing and memory on the shared CPU machines are noisy, so every script reports *ratios
measured in one run* next to the machine description. This module gives them:

- :func:`machine_info` -- one string with host, CPU, cores, threads, Python / torch / numba
  versions, to print above every table.
- :func:`time_min` -- minimum wall time of a callable over ``repeats`` calls after ``warmup``
  calls (the minimum is the least noisy estimate of what the code costs).
- :func:`time_interleaved` -- the same for several callables, run round-robin so that a burst
  of load from another process hits all of them alike; use it for ratios.
- :func:`peak_extra_memory` -- peak extra resident memory (bytes) of one call of a callable,
  measured in a fresh Python process. Linux only: it reads ``VmHWM`` from
  ``/proc/self/status`` after resetting it by writing ``5`` to ``/proc/self/clear_refs``
  (``resource.getrusage().ru_maxrss`` cannot be reset and survives ``exec``, so it would
  report the parent's peak).
- :func:`markdown_table` -- rows as a Markdown table.

Use from a script in ``benchmarks/``::

    import harness  # benchmarks/ is on sys.path when a script there runs

    def make_bilinear(b, c, h, backward=False):      # module-level: runs in the child
        x = torch.randn(b, c, h, h, requires_grad=backward)
        def step():
            y = F.interpolate(x, scale_factor=2, mode="bilinear")
            if backward:
                y.sum().backward()
                x.grad = None                      # so every call allocates its gradient
        return step

    print(harness.machine_info())
    t = harness.time_interleaved({"bilinear": make_bilinear(2, 256, 64)})
    mem = harness.peak_extra_memory("benchmarks/mycase.py:make_bilinear",
                                    dict(b=2, c=256, h=64, backward=True))
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

__all__ = [
    "Timing",
    "machine_info",
    "time_min",
    "time_interleaved",
    "peak_extra_memory",
    "markdown_table",
]


# ---- machine ---------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _version(module_name: str) -> str | None:
    try:
        module = __import__(module_name)
    except Exception:  # not installed, or fails to import: report it as absent
        return None
    return getattr(module, "__version__", "?")


def machine_info(extra_modules=("numba", "triton")) -> str:
    """One line describing where the numbers come from (print it next to every table)."""
    import torch

    parts = [
        f"{platform.node()} ({platform.system()} {platform.machine()})",
        f"CPU {_cpu_model()}, {os.cpu_count()} logical cores",
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
        f"python {platform.python_version()}",
    ]
    for name in extra_modules:
        v = _version(name)
        parts.append(f"{name} {v}" if v else f"{name} absent")
    if torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name()}")
    try:
        parts.append("load avg {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    except OSError:
        pass
    return "; ".join(parts)


# ---- time ------------------------------------------------------------------------------------

@dataclasses.dataclass
class Timing:
    """Seconds per call: the minimum and the median over the timed repeats."""

    best: float
    median: float
    repeats: int

    def __str__(self) -> str:
        return f"{self.best * 1e3:.2f} ms (median {self.median * 1e3:.2f} ms, n={self.repeats})"


def _timing(samples) -> Timing:
    return Timing(min(samples), statistics.median(samples), len(samples))


def time_min(fn: Callable[[], object], *, warmup: int = 2, repeats: int = 10,
             clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Wall time of ``fn()``: ``warmup`` untimed calls, then the min / median of ``repeats``.
    ``clock=time.process_time`` measures this process's CPU time instead (with one thread,
    what the call costs whatever else loads the machine)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        samples.append(clock() - t0)
    return _timing(samples)


def time_interleaved(fns: dict[str, Callable[[], object]], *, warmup: int = 2,
                     repeats: int = 10,
                     clock: Callable[[], float] = time.perf_counter) -> dict[str, Timing]:
    """:func:`time_min` for several callables, called round-robin (fairer ratios under load)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = clock()
            fn()
            samples[name].append(clock() - t0)
    return {name: _timing(s) for name, s in samples.items()}


# ---- memory ----------------------------------------------------------------------------------

# The child process. It builds the callable (inputs allocated), calls it ``warmup`` times (JIT
# compiles, lazy initialisation), hands freed heap back to the OS, resets the high-water mark,
# then calls it once more and reports VmHWM - VmRSS(before the call).
_CHILD = r"""
import ctypes, importlib, importlib.util, json, sys

def vm(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field + " not in /proc/self/status")

spec = json.loads(sys.argv[1])
import torch
torch.set_num_threads(spec["threads"])
target, func = spec["target"].rsplit(":", 1)
if target.endswith(".py"):
    sys.path.insert(0, spec["target_dir"])
    s = importlib.util.spec_from_file_location("_bench_target", target)
    module = importlib.util.module_from_spec(s)
    s.loader.exec_module(module)
else:
    module = importlib.import_module(target)
step = getattr(module, func)(**spec["kwargs"])
for _ in range(spec["warmup"]):
    step()
try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
except OSError:
    pass
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = vm("VmRSS")
step()
print(json.dumps({"peak_extra": vm("VmHWM") - before, "baseline": before}))
"""


def peak_extra_memory(target: str, kwargs: dict | None = None, *, threads: int | None = None,
                      warmup: int = 1, timeout: float = 600.0) -> int:
    """Peak extra resident memory, in bytes, of one call, measured in a fresh process.

    Args:
        target: ``"path/to/file.py:factory"`` or ``"package.module:factory"``. In the child,
            ``factory(**kwargs)`` allocates the inputs and returns a no-argument callable (one
            step: e.g. forward, or forward + backward); it must be a module-level function.
            A step that keeps results alive between calls (``.grad`` accumulation, caches)
            should release them itself, or later calls measure less than the first.
        kwargs: JSON-serialisable keyword arguments for ``factory``.
        threads: ``torch.set_num_threads`` in the child (default: this process's setting).
        warmup: calls before the measured one (so JIT compilation and lazy initialisation
            are not counted).

    Returns:
        ``VmHWM`` after the measured call minus ``VmRSS`` just before it: memory that the
        call itself made resident (inputs and everything allocated before are excluded).
        Large allocations are forced to ``mmap`` (``MALLOC_MMAP_THRESHOLD_``) so freeing them
        really returns them and the warm-up cannot hide the measured call's peak.
    """
    if not os.path.exists("/proc/self/clear_refs"):
        raise RuntimeError("peak_extra_memory needs Linux /proc/self/clear_refs")
    import torch

    path, sep, _ = target.rpartition(":")
    if not sep or not path:
        raise ValueError(f"target must be 'file.py:factory' or 'module:factory', got {target!r}")
    if path.endswith(".py"):
        path = os.path.abspath(path)
        target = f"{path}:{target.rsplit(':', 1)[1]}"
    spec = {
        "target": target,
        "target_dir": os.path.dirname(path) if path.endswith(".py") else "",
        "kwargs": kwargs or {},
        "threads": threads if threads is not None else torch.get_num_threads(),
        "warmup": warmup,
    }
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(128 * 1024),
               MALLOC_TRIM_THRESHOLD_=str(128 * 1024))
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(spec)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe for {target} failed:\n{proc.stderr}")
    return int(json.loads(proc.stdout.strip().splitlines()[-1])["peak_extra"])


# ---- output ----------------------------------------------------------------------------------

def markdown_table(headers, rows) -> str:
    """``headers`` (strings) and ``rows`` (sequences of values, ``str()``-ed) as Markdown."""
    lines = ["| " + " | ".join(map(str, headers)) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)
