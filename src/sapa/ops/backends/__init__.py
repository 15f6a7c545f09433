"""The backends of the ops, one package each, and the contract they implement.

- ``reference``: unfold / einsum and ``grid_sample``, plain differentiable PyTorch, the ground
  truth of every test. It is not a :class:`Backend`: its functions (``sapa_attention``,
  ``local_similarity``, ``local_assemble``, ``sampled.sampled_attention``) are called directly
  and differentiated by autograd. Never chosen automatically.
- ``lean``: pure PyTorch, one window offset (or sampling point) at a time.
- ``numba``: fused numba kernels for CPU tensors (formerly ``cpu``; that name stays an alias).
- ``triton``: fused Triton kernels for CUDA tensors.

Every backend but the reference implements :class:`Backend`, which ``sapa.ops._library`` wraps
in the custom ops ``torch.ops.sapa.*``. Importing a backend package is cheap (torch only): numpy,
numba and triton load when a backend first runs, so ``sapa.ops.dispatch`` imports them all.
"""
from __future__ import annotations

from typing import Protocol

from torch import Tensor

# the op families and the protocol functions of each
FAMILIES = {
    "window": ("attention_fwd", "attention_bwd", "similarity_fwd", "similarity_bwd",
               "assemble_fwd", "assemble_bwd"),
    "sampled": ("sampled_fwd", "sampled_bwd"),
}


class Unavailable(str):
    """A reason from ``can_run`` meaning "these tensors are this backend's to run, but it cannot
    run here" (a missing compiler, ``SAPA_DISABLE_JIT``, an earlier failed launch), as opposed
    to a plain ``str``: "not this backend's tensors" (another device). When the automatic choice
    passes a backend over for an ``Unavailable`` reason it warns, once per backend."""


class BackendUnavailable(RuntimeError):
    """Raised by a backend whose first launch on some device and dtype failed (its compiler
    cannot build the kernels there, say). The backend records the failure first, so that its
    ``can_run`` refuses those tensors from then on; the automatic choice then falls back to
    the next backend with one warning, while a forced backend lets the error through."""

    def __init__(self, backend: str, reason: str):
        super().__init__(f"backend {backend!r} cannot run here: {reason}")
        self.backend, self.reason = backend, reason


class Backend(Protocol):
    """What a backend module provides (structural: a module with these names implements it).

    ``FAMILIES`` names the op families it implements (keys of :data:`FAMILIES`); the functions
    of a family it does not list may be absent. Shapes: ``q`` ``B x d x H' x W'`` (``B x G*d x
    H' x W'`` for ``sampled``), ``k`` ``B x d x H x W``, ``v`` ``B x C x H x W``, ``kernels`` /
    scores ``B x K*K x H' x W'``, ``offsets`` ``B x 2*G*N x H' x W'``, ``out`` ``B x C x H' x W'``;
    ``stat`` ``B x H' x W'`` (``B x G x H' x W'`` for ``sampled``), in
    ``_dtypes.compute_dtype(q.dtype)``, with the meaning of ``sapa.ops._normalizers``; every
    backend keeps the same ``stat``, so a backward may run on another backend than its forward.
    Inputs arrive validated, of one dtype and device, with any strides; results are in the
    inputs' dtype (``stat`` excepted), of any strides (``_library`` fixes them up).
    """

    NAME: str
    FAMILIES: tuple[str, ...]

    def can_run(self, *tensors: Tensor, automatic: bool = False) -> str | None:
        """``None`` if this backend can run ops on ``tensors``, else why not (a ``str``, or an
        :class:`Unavailable`). ``automatic``: the choice is not forced. Cheap, imports nothing:
        failures to load or compile surface at the first launch, as :class:`BackendUnavailable`.
        """

    def attention_fwd(self, q: Tensor, k: Tensor, v: Tensor, kernel_size: int, normalizer: str,
                      border: str) -> tuple[Tensor, Tensor]:
        """``(out, stat)`` of ``sapa_attention``."""

    def attention_bwd(self, grad: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor,
                      stat: Tensor, kernel_size: int, normalizer: str,
                      border: str) -> tuple[Tensor, Tensor, Tensor]:
        """``(grad_q, grad_k, grad_v)`` for the output gradient ``grad``."""

    def similarity_fwd(self, q: Tensor, k: Tensor, kernel_size: int, border: str) -> Tensor:
        """The scores of ``local_similarity``."""

    def similarity_bwd(self, grad: Tensor, q: Tensor, k: Tensor, kernel_size: int,
                       border: str) -> tuple[Tensor, Tensor]:
        """``(grad_q, grad_k)``; entries of ``grad`` at window points outside the map count
        as zero."""

    def assemble_fwd(self, kernels: Tensor, v: Tensor, kernel_size: int, border: str) -> Tensor:
        """The output of ``local_assemble``."""

    def assemble_bwd(self, grad: Tensor, kernels: Tensor, v: Tensor, kernel_size: int,
                     border: str) -> tuple[Tensor, Tensor]:
        """``(grad_kernels, grad_v)``."""

    def sampled_fwd(self, q: Tensor, k: Tensor, v: Tensor, offsets: Tensor, groups: int,
                    num_points: int, normalizer: str) -> tuple[Tensor, Tensor]:
        """``(out, stat)`` of ``sampled_attention``."""

    def sampled_bwd(self, grad: Tensor, q: Tensor, k: Tensor, v: Tensor, offsets: Tensor,
                    out: Tensor, stat: Tensor, groups: int, num_points: int,
                    normalizer: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(grad_q, grad_k, grad_v, grad_offsets)``."""
