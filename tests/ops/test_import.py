"""``import sapa`` needs only torch: numpy and numba load when the numba backend first runs.

In a fresh interpreter whose ``import numpy`` is blocked (``sys.modules["numpy"] = None``, with
``builtins.__import__`` recording which files ask for it), ``import sapa`` asks for numpy
nowhere in sapa's code, and ``sapa.SAPA``
trains a step: the automatic choice finds that the numba backend cannot load, says so once, and
runs ``lean``. numpy and numba are never imported.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import sapa

_PROBE = r"""
import builtins, json, sys, warnings

asked = []  # the files whose code asked for numpy
real_import = builtins.__import__


def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and (name == "numpy" or name.startswith("numpy.")):
        asked.append((globals or {}).get("__file__") or "?")
    return real_import(name, globals, locals, fromlist, level)


builtins.__import__ = recording_import
sys.modules["numpy"] = None  # every import of numpy fails, find_spec says it is not there
warnings.simplefilter("ignore", UserWarning)  # torch's own "Failed to initialize NumPy"
import torch

before = len(asked)
import sapa

at_import = [f for f in asked[before:] if f.startswith(SRC)]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", RuntimeWarning)
    torch.manual_seed(0)
    up = sapa.SAPA(8, 8, variant="B", kernel_size=3, embed_dim=4)
    x, guide = torch.randn(1, 8, 4, 5, requires_grad=True), torch.randn(1, 8, 8, 10)
    out = up(x, guide)
    out.square().mean().backward()
print(json.dumps({
    "at_import": at_import,
    "shape": list(out.shape),
    "finite": bool(torch.isfinite(x.grad).all()),
    "warnings": [str(w.message) for w in caught if "cannot run here" in str(w.message)],
    "numpy": sys.modules.get("numpy") is not None,
    "numba": "numba" in sys.modules,
}))
"""


def test_import_and_train_without_numpy():
    src = os.path.dirname(os.path.dirname(os.path.abspath(sapa.__file__)))
    code = f"SRC = {src!r}\n" + _PROBE
    env = {key: val for key, val in os.environ.items() if key != "SAPA_DISABLE_JIT"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["at_import"] == [], "import sapa asked for numpy"
    assert result["shape"] == [1, 8, 8, 10] and result["finite"]
    # the numba backend could not load: one warning that says why, then lean ran
    assert len(result["warnings"]) == 1
    assert "backend 'numba' cannot run here (numba cannot be imported" in result["warnings"][0]
    assert "'lean'" in result["warnings"][0]
    assert not result["numpy"] and not result["numba"]
