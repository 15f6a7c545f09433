"""The contract between ``sapa compare`` and a dense-prediction task.

A task (segmentation, depth, matting, detection) is one sub-package ``sapa.tasks.<name>``
whose ``TASK`` is an instance of a ``Task`` subclass. It supplies everything that differs
between tasks, as detectron2 splits "dataset + model + evaluator":

- its **data** (the embedded default set and the real on-disk layouts behind ``--data``),
- its **model**, built for one upsampler name,
- its **loss** for one training batch, and its **inference** for one evaluation batch,
- its **evaluator** (a ``Meter``: ``update`` per batch, ``sync`` across processes,
  ``compute`` once), with the primary metric and its direction,
- the **columns** of ``results.md`` and its **figures**.

The harness (``sapa.experiments``: loop, optimiser and schedule, resume, checkpoints, DDP,
progress bars, ``results.json``/``results.md``, seeds' statistics) knows nothing else about
the task. Batches are whatever the task's datasets and ``collate`` make (tensors, or lists of
images and targets of different sizes for detection); the harness only moves them with
``Task.to_device`` and hands them back to the task.

Data flows one way: tasks use ``sapa.models`` and ``sapa.modules``, never ``sapa.experiments``;
what a meter needs from the process group comes in through the ``Reducer`` protocol.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import torch
import torch.nn as nn


@runtime_checkable
class Reducer(Protocol):
    """What a meter may ask of the process group (one process: identity operations)."""

    world_size: int

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Element-wise sum of ``t`` over the processes (a CPU tensor, same shape)."""

    def all_gather_object(self, obj: Any) -> list:
        """Every process's ``obj`` (picklable), in rank order."""


@runtime_checkable
class Meter(Protocol):
    """Accumulates one evaluation.

    ``update`` is called once per evaluation batch with what ``Task.predict`` returned and the
    batch itself; ``sync`` once, after the last batch, on every process (sums may be
    all-reduced; per-image values and detections must be gathered, because a sum of per-process
    medians or APs is wrong); ``compute`` once, after ``sync``: a flat dict of floats (the
    primary metric among them) plus, optionally, non-float extras (per-class lists) that are
    stored in the row but not tabulated. ``compute`` raises ``ValueError`` when there was
    nothing to evaluate (never returns NaN for that).
    """

    def update(self, outputs: Any, batch: Any) -> None: ...

    def sync(self, reducer: Reducer) -> None: ...

    def compute(self) -> dict: ...


@dataclass(frozen=True)
class Column:
    """One metric column of ``results.md``: ``row[key] * scale`` printed with ``digits``
    decimals (mean ± std over seeds); ``header`` as in the paper's table."""

    key: str
    header: str
    scale: float = 1.0
    digits: int = 3
    lower_is_better: bool = False


class Task:
    """Base class of every task; subclasses set the class attributes and override the methods.

    Class attributes:
        name: ``--task`` value.
        primary: key of the primary metric in ``Meter.compute()``'s dict (the curves and the
            best-of-table mark use it).
        lower_is_better: direction of ``primary``.
        columns: metric columns of ``results.md``, in the paper's order.
        default_upsamplers, quick_upsamplers: ``--upsamplers`` without / with ``--quick``.
        presets: generic settings of the harness, ``key -> (default, quick)``; keys:
            ``seeds``, ``iters``, ``batch_size``, ``eval_batch_size``, ``image_size``,
            ``num_train``, ``num_val``, ``eval_every``, ``ckpt_every``, ``lr``,
            ``weight_decay``.
    """

    name: str = ""
    primary: str = ""
    lower_is_better: bool = False
    columns: tuple[Column, ...] = ()
    default_upsamplers: tuple[str, ...] = ()
    quick_upsamplers: tuple[str, ...] = ()
    presets: dict = {}

    # ---- command line and configuration ------------------------------------------------------

    def add_arguments(self, group: argparse._ArgumentGroup) -> None:
        """Add this task's own options (``--model``, ``--max-depth``, ...). Every option must
        default to ``None`` or a value that ``resolve`` accepts, and must not clash with the
        harness's options or with another task's option of a different meaning."""

    def resolve(self, args: argparse.Namespace, settings: dict) -> dict:
        """This task's part of the run configuration (JSON-serialisable: it is recorded in
        ``results.json`` and compared on ``--resume``), from ``args`` and the harness's
        resolved ``settings`` (``image_size``, ``num_train``, ``data``, ...). Every check that
        can fail on user input raises ``ValueError`` naming the option, before any work."""
        return {}

    # ---- data --------------------------------------------------------------------------------

    def build_datasets(self, config: dict) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
        """``(train, val)``. Real data is validated here where that is cheap (files exist,
        pairs match, labels in range); errors name the file. Raises ``ValueError``."""
        raise NotImplementedError

    def collate(self) -> Callable | None:
        """The ``collate_fn`` of the data loaders (``None``: torch's default stacking)."""
        return None

    def to_device(self, batch: Any, device: torch.device) -> Any:
        """``batch`` with every tensor (in tuples, lists and dicts) moved to ``device``."""
        return _to_device(batch, device)

    # ---- model, loss, inference ----------------------------------------------------------------

    def build_model(self, config: dict, upsampler: str, train_set) -> nn.Module:
        """A freshly initialised model whose upsampling stages are ``upsampler`` (a name or a
        spec understood by ``sapa.build_upsampler``). The harness seeds the RNG before the
        call, so the same seed builds the same weights."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """The training loss of one (device-resident) batch, a scalar; ``model`` is in train
        mode and may be wrapped in ``DistributedDataParallel``."""
        raise NotImplementedError

    def predict(self, model: nn.Module, batch: Any) -> Any:
        """Inference on one evaluation batch (``model`` in eval mode, no grad): what the meter's
        ``update`` takes (class maps, depth maps, alphas, detections)."""
        raise NotImplementedError

    def make_meter(self, config: dict, val_set) -> Meter:
        raise NotImplementedError

    def example_input(self, config: dict, device: torch.device) -> Any:
        """One input for ``model(...)`` in eval mode, as the FLOP count sees it (one image)."""
        raise NotImplementedError

    # ---- figures -------------------------------------------------------------------------------

    def draw_figures(self, out_dir: str, models: dict, curves: dict, val_set,
                     device: torch.device) -> list[str]:
        """Write the task's PNGs into ``out_dir``; return their paths.

        Args:
            models: upsampler -> trained model (first seed), in eval mode on ``device``.
            curves: upsampler -> one dict per seed: ``iters``, ``loss``, ``val_iters``,
                ``val_<primary>``.
        """
        return []


def _to_device(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj
