"""Backend choice for every op, in one place (as NATTEN does it).

``AUTO_ORDER`` lists the backends tried when the caller forces none; each backend exposes
``can_run(*tensors, automatic=False) -> None | str`` (``sapa.ops.backends.Backend``). The first
that implements the op's family and can run wins, and the ``sapa.dispatch`` logger says at
DEBUG level which ran and why each earlier one was passed over::

    import logging; logging.basicConfig(); logging.getLogger("sapa.dispatch").setLevel("DEBUG")

Callers never branch on device: they name a backend or leave it to this module. The automatic
choice is made when the op *runs*, inside the custom op (its ``backend`` argument is
``"auto"``), not when it is traced: a program made by ``torch.export`` or ``torch.compile`` on
one device chooses again on the device it runs on.

While an ONNX exporter traces (``exporting_onnx``), no backend is chosen: the public ops trace
``sapa.ops._onnx``'s plain-PyTorch formulation, which becomes standard ONNX operators.

A backend that should run some tensors but cannot (numba missing or disabled, Triton unable to
compile for this GPU, a failed first launch) is passed over by the automatic choice with one
``RuntimeWarning`` per backend saying why; a forced backend raises instead.
"""
from __future__ import annotations

import logging
import warnings

import torch

from .backends import FAMILIES, BackendUnavailable, Unavailable, lean, numba, reference, triton

logger = logging.getLogger("sapa.dispatch")

# name -> backend module (imported with this one: their imports are cheap, see ``backends``)
BACKENDS = {
    "reference": reference,
    "lean": lean,
    "numba": numba,
    "triton": triton,
}
# other accepted names -> the backend they stand for
ALIASES = {"cpu": "numba"}
# tried in this order when no backend is forced; the reference is never chosen automatically
AUTO_ORDER = ("triton", "numba", "lean")
# the ``backend`` argument of ``torch.ops.sapa.*`` when the caller forced none
AUTO = "auto"
# the protocol function -> its family
_FAMILY_OF = {fn: family for family, fns in FAMILIES.items() for fn in fns}
_warned: set[str] = set()


def list_backends(family: str = "window") -> list[str]:
    """Names accepted by the ``backend=`` argument of the ops of ``family`` (``"window"``:
    ``sapa_attention``, ``local_similarity``, ``local_assemble``; ``"sampled"``:
    ``sampled_attention``, ``sampled_similarity``). ``"cpu"`` is also accepted, as an alias of
    ``"numba"``."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {list(FAMILIES)}, got {family!r}")
    return [name for name, mod in BACKENDS.items() if family in mod.FAMILIES]


def load_backend(name: str):
    """The module implementing backend ``name`` (an alias resolves to its backend)."""
    return BACKENDS[ALIASES.get(name, name)]


def canonical_backend(backend, family: str = "window") -> str:
    """The name of the backend the ``backend=`` argument asks for: ``None`` -> ``"auto"``, an
    alias -> its backend. A name that is no backend of ``family`` is a ``ValueError``."""
    if backend is None:
        return AUTO
    names = list_backends(family)
    name = ALIASES.get(backend, backend) if isinstance(backend, str) else backend
    if name not in names:
        aliases = [a for a, target in ALIASES.items() if target in names]
        also = f" (or the alias {aliases[0]!r})" if len(aliases) == 1 else ""
        raise ValueError(f"backend must be None or one of {names}{also}, got {backend!r}")
    return name


def exporting_onnx() -> bool:
    """Whether ``torch.onnx.export`` is tracing the ops now (either exporter). The public ops
    then trace ``sapa.ops._onnx``'s plain-PyTorch formulation instead of a custom op, whatever
    backend they were given: ONNX has no translation of ``torch.ops.sapa.*``, and no backend
    runs in an ONNX graph. ``torch.compile`` reads this as ``False``."""
    return torch.onnx.is_in_onnx_export()


def _debug(msg, *args):
    # dynamo cannot trace logging calls; the choice is logged when running eagerly
    if not torch.compiler.is_compiling():
        logger.debug(msg, *args)


def _passed_over(name: str, reason: str, chosen: str) -> None:
    _debug("backend %s passed over: %s", name, reason)
    if isinstance(reason, Unavailable) and name not in _warned:
        _warned.add(name)
        warnings.warn(f"sapa: backend {name!r} cannot run here ({reason}); the automatic "
                      f"choice runs {chosen!r} instead", RuntimeWarning, stacklevel=2)


def choose_backend(*tensors, backend: str | None = None, family: str = "window"):
    """The backend module that will run an op of ``family`` on ``tensors``.

    ``backend=None`` (or ``"auto"``) walks ``AUTO_ORDER``; a name forces that backend and
    fails with a clear error if it cannot run here.
    """
    name = AUTO if backend == AUTO else canonical_backend(backend, family)
    if name != AUTO:
        mod = BACKENDS[name]
        reason = mod.can_run(*tensors)
        if reason is not None:
            raise RuntimeError(f"backend={name!r} cannot run here: {reason}")
        _debug("backend %s (requested)", name)
        return mod
    skipped = []
    for name in AUTO_ORDER:
        mod = BACKENDS[name]
        if family not in mod.FAMILIES:
            continue
        reason = mod.can_run(*tensors, automatic=True)
        if reason is None:
            for other, why in skipped:
                _passed_over(other, why, name)
            _debug("backend %s (automatic)", name)
            return mod
        skipped.append((name, reason))
    raise RuntimeError("no backend can run these inputs")  # unreachable: lean always can


def run(backend: str, fn: str, tensors, *args):
    """``fn(*args)`` of the backend named ``backend`` (``"auto"``: chosen now, on
    ``tensors``), for the custom ops. On the automatic path a backend that raises
    :class:`BackendUnavailable` is passed over (one warning) and the next one runs."""
    family = _FAMILY_OF[fn]
    if backend != AUTO:
        mod = choose_backend(*tensors, backend=backend, family=family)
        if not hasattr(mod, fn):
            raise ValueError(f"backend {backend!r} does not run through torch.ops.sapa: call "
                             "the functional ops (sapa.ops) with it")
        return getattr(mod, fn)(*args)
    failed: dict[str, BackendUnavailable] = {}
    while True:
        mod = choose_backend(*tensors, family=family)
        if mod.NAME in failed:  # a backend must record its failure (see BackendUnavailable)
            raise RuntimeError(f"backend {mod.NAME!r} failed again") from failed[mod.NAME]
        for name, error in failed.items():
            _passed_over(name, Unavailable(error.reason), mod.NAME)
        try:
            return getattr(mod, fn)(*args)
        except BackendUnavailable as e:
            failed[mod.NAME] = e
