"""Backend choice, in one place (as NATTEN does it).

``AUTO_ORDER`` lists the backends tried when the caller passes ``backend=None``; each backend
module exposes ``can_run(*tensors, automatic=False) -> None | str`` (``None``: it can; a
string: why not; ``automatic=True`` when the choice is not forced). The
first that can run wins, and the ``sapa.dispatch`` logger says at DEBUG level which ran and why
each earlier one was passed over::

    import logging; logging.basicConfig(); logging.getLogger("sapa.dispatch").setLevel("DEBUG")

Callers never branch on device: they name a backend or leave it to this module.

Every backend module is imported with this one (their imports are cheap: compilers and Triton
load on first use), so that ``choose_backend`` is plain Python that ``torch.compile`` traces
with ``fullgraph=True``: no import, no logging call while tracing.
"""
from __future__ import annotations

import importlib
import logging

import torch

logger = logging.getLogger("sapa.dispatch")

# name -> module (relative to sapa.ops) implementing the backend
BACKENDS = {
    "reference": ".backends.reference",
    "lean": ".backends.lean",
    "cpu": ".backends.numba",
    "triton": ".backends.triton",
}
# tried in this order when backend=None; the reference is never chosen automatically
AUTO_ORDER = ("triton", "cpu", "lean")


def list_backends() -> list[str]:
    """Names accepted by the ``backend=`` argument of every op."""
    return list(BACKENDS)


def load_backend(name: str):
    """The module implementing backend ``name``."""
    mod = _MODULES.get(name)
    if mod is None:
        mod = _MODULES[name] = importlib.import_module(BACKENDS[name], __package__)
    return mod


def _debug(msg, *args):
    # dynamo cannot trace logging calls; the choice is logged when running eagerly
    if not torch.compiler.is_compiling():
        logger.debug(msg, *args)


def choose_backend(*tensors, backend: str | None = None):
    """The backend module that will run an op on ``tensors``.

    ``backend=None`` walks ``AUTO_ORDER``; a name forces that backend and fails with a clear
    error if it cannot run here.
    """
    if backend is not None:
        if not isinstance(backend, str) or backend not in BACKENDS:
            raise ValueError(f"backend must be None or one of {list_backends()}, got {backend!r}")
        mod = load_backend(backend)
        reason = mod.can_run(*tensors)
        if reason is not None:
            raise RuntimeError(f"backend={backend!r} cannot run here: {reason}")
        _debug("backend %s (requested)", backend)
        return mod
    for name in AUTO_ORDER:
        mod = load_backend(name)
        reason = mod.can_run(*tensors, automatic=True)
        if reason is None:
            _debug("backend %s (automatic)", name)
            return mod
        _debug("backend %s passed over: %s", name, reason)
    raise RuntimeError("no backend can run these inputs")  # unreachable: lean always can


# imported up front (see the module docstring); a backend must not import this module
_MODULES: dict = {}
for _name in BACKENDS:
    load_backend(_name)
