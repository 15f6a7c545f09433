"""Backend choice, in one place (as NATTEN does it).

``AUTO_ORDER`` lists the backends tried when the caller passes ``backend=None``; each backend
module exposes ``can_run(*tensors) -> None | str`` (``None``: it can; a string: why not). The
first that can run wins, and the ``sapa.dispatch`` logger says at DEBUG level which ran and why
each earlier one was passed over::

    import logging; logging.basicConfig(); logging.getLogger("sapa.dispatch").setLevel("DEBUG")

Callers never branch on device: they name a backend or leave it to this module.
"""
from __future__ import annotations

import importlib
import logging

logger = logging.getLogger("sapa.dispatch")

# name -> module (relative to sapa.ops) implementing the backend
BACKENDS = {
    "reference": ".reference",
    "lean": ".lean",
}
# tried in this order when backend=None; the reference is never chosen automatically
AUTO_ORDER = ("lean",)


def list_backends() -> list[str]:
    """Names accepted by the ``backend=`` argument of every op."""
    return list(BACKENDS)


def load_backend(name: str):
    """The module implementing backend ``name``."""
    return importlib.import_module(BACKENDS[name], __package__)


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
        logger.debug("backend %s (requested)", backend)
        return mod
    for name in AUTO_ORDER:
        mod = load_backend(name)
        reason = mod.can_run(*tensors)
        if reason is None:
            logger.debug("backend %s (automatic)", name)
            return mod
        logger.debug("backend %s passed over: %s", name, reason)
    raise RuntimeError("no backend can run these inputs")  # unreachable: lean always can
