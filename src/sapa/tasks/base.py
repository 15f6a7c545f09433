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

Errors: a check of user input (an option's value, a data folder or file, a missing optional
package) raises ``UsageError`` (``sapa.errors``, re-exported here), a ``ValueError`` whose
message names the option or the file (and line) and what was expected; ``sapa compare`` prints
it as one line and exits with status 2. Any other exception is treated as a bug in the code and
keeps its traceback, so do not raise ``UsageError`` for internal inconsistencies.

Adding a task: a package ``sapa/tasks/<name>/`` whose ``__init__`` defines ``TASK``, an entry in
``sapa.tasks.TASKS``, and tests; ``docs/compare.md`` walks through it.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn as nn

from ..errors import UsageError

__all__ = ["Task", "Meter", "Reducer", "Column", "UsageError", "check_task", "PRESET_KEYS"]

# the harness settings a task's ``presets`` must give, each as ``(default, quick)``
PRESET_KEYS = ("seeds", "iters", "batch_size", "eval_batch_size", "image_size", "num_train",
               "num_val", "eval_every", "ckpt_every", "lr", "weight_decay")


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
    batch itself (device-resident, as ``Task.to_device`` left it); ``sync`` once, after the last
    batch, on every process (sums may be all-reduced; per-image values and detections must be
    gathered, because a sum of per-process medians or APs is wrong); ``compute`` once, after
    ``sync``, on every process: a flat dict of floats (the primary metric among them; ints
    are stored as floats) plus, optionally, JSON-serialisable non-float extras (per-class
    lists) that are stored in the row but not tabulated. ``compute`` raises ``ValueError``
    when there was nothing to evaluate (never returns NaN for that); the harness reports it,
    a NaN primary metric and any infinite value as a user error (the data), in one line. A
    column other than the primary may be NaN where it is undefined on the data (a COCO AP of
    an area range without objects): the row stores ``None`` and the table shows ``—``.

    Under DDP process ``r`` of ``W`` sees the validation samples ``r, r + W, r + 2W, ...`` (in
    batches of ``eval_batch_size``, made by ``Task.collate``). For the result not to depend on
    ``W``, reduce gathered values in an order-free way: counts and integers sum exactly;
    medians and sorted-order statistics are order-free; for a mean of floats use
    ``math.fsum`` (exactly rounded) rather than a running sum.
    """

    def update(self, outputs: Any, batch: Any) -> None: ...

    def sync(self, reducer: Reducer) -> None: ...

    def compute(self) -> dict: ...


@dataclass(frozen=True)
class Column:
    """One metric column of ``results.md``: ``row[key] * scale`` printed with ``digits``
    decimals (mean ± std over seeds); ``header`` as in the paper's table. The best mean of the
    column (highest, or lowest when ``lower_is_better``) is printed in bold."""

    key: str
    header: str
    scale: float = 1.0
    digits: int = 3
    lower_is_better: bool = False


class Task:
    """Base class of every task; subclasses set the class attributes and override the methods.

    The first paragraph of a subclass's docstring is the description of its option group in
    ``sapa compare --task <name> --help``.

    Class attributes:
        name: ``--task`` value.
        primary: key of the primary metric in ``Meter.compute()``'s dict (the curves and the
            log lines use it); one of ``columns``.
        lower_is_better: direction of ``primary`` (must agree with its column).
        columns: metric columns of ``results.md``, in the paper's order.
        table_note: what ``results.md`` says under the table about the metrics (definitions,
            split, units); the harness adds the rest (seeds, FLOPs, timing).
        default_upsamplers, quick_upsamplers: ``--upsamplers`` without / with ``--quick``.
        presets: generic settings of the harness, ``key -> (default, quick)``; keys (all
            required, see ``PRESET_KEYS``): ``seeds`` (a list of ints), ``iters``,
            ``batch_size`` (global), ``eval_batch_size`` (per process), ``image_size``,
            ``num_train``, ``num_val`` (each may be ``None``: the task decides), ``eval_every``,
            ``ckpt_every``, ``lr``, ``weight_decay`` (AdamW). An explicit command-line option
            overrides its preset.
    """

    name: str = ""
    primary: str = ""
    lower_is_better: bool = False
    columns: tuple[Column, ...] = ()
    table_note: str = ""
    default_upsamplers: tuple[str, ...] = ()
    quick_upsamplers: tuple[str, ...] = ()
    presets: dict = {}

    # ---- command line and configuration ------------------------------------------------------

    def add_arguments(self, group: argparse._ArgumentGroup) -> None:
        """Add this task's own options (``--model``, ``--max-depth``, ...). Every option must
        default to ``None`` or a value that ``resolve`` accepts, and must not clash with the
        harness's options (``sapa compare --help``) or with another task's option of a
        different meaning."""

    def resolve(self, args: argparse.Namespace, settings: dict) -> dict:
        """This task's part of the run configuration (JSON-serialisable: it is recorded in
        ``results.json`` and compared on ``--resume``), from ``args`` and the harness's
        resolved ``settings``: ``quick`` (bool), ``data`` (the ``--data`` string, ``None`` when
        not given: the task's embedded default), ``data_seed``, ``image_size``, ``num_train``,
        ``num_val`` (presets or explicit options). Returned keys that are also harness
        settings (``data``, ``image_size``, ``num_train``, ``num_val``) replace the harness's
        value: ``data`` should say what the run reads in a form that does not depend on the
        working directory (e.g. ``"synthetic"`` or an absolute path); a real data set may take
        a larger default size, or ``None`` for all its samples. The keys ``task`` and those of
        the training settings (``iters``, ``lr``, ...) are the harness's. Every check that can
        fail on user input raises ``UsageError`` naming the option, before any work."""
        return {}

    # ---- data --------------------------------------------------------------------------------

    def build_datasets(self, config: dict) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
        """``(train, val)`` for the run configuration ``config`` (the harness's settings and
        what ``resolve`` returned). Real data is validated here where that is cheap (files
        exist, pairs match, labels in range); errors are ``UsageError`` naming the file (and
        line). A sample that turns out bad only when it is read may raise ``UsageError`` from
        ``__getitem__`` too."""
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
        """A fresh, empty ``Meter`` for one evaluation of ``val_set``."""
        raise NotImplementedError

    def example_input(self, config: dict, device: torch.device) -> Any:
        """One input for ``model(...)`` in eval mode, as the FLOP count sees it (one image):
        the harness counts ``model(example_input(config, device))``."""
        raise NotImplementedError

    # ---- figures -------------------------------------------------------------------------------

    def draw_figures(self, out_dir: str, models: dict, curves: dict, val_set,
                     device: torch.device) -> list[str]:
        """Write the task's PNGs into ``out_dir``; return their paths. The harness draws
        ``curves.png`` (training loss and ``val_<primary>`` per upsampler) itself.

        Args:
            models: upsampler -> trained model (first seed), in eval mode on ``device``.
            curves: upsampler -> one dict per seed: ``iters``, ``loss``, ``val_iters``,
                ``val_<primary>``.
        """
        return []


def check_task(task: Task) -> None:
    """Raise ``TypeError`` if ``task`` does not fill the contract (a bug in the task, not
    user input): a name, a primary metric among its columns with the same direction, and
    every preset."""
    if not isinstance(task, Task):
        raise TypeError(f"a task must be a sapa.tasks.base.Task, got {type(task).__name__}")
    keys = [c.key for c in task.columns]
    if not task.name or not task.columns or len(set(keys)) != len(keys):
        raise TypeError(f"task {task.name!r} needs a name and columns with distinct keys")
    col = {c.key: c for c in task.columns}.get(task.primary)
    if col is None or col.lower_is_better != task.lower_is_better:
        raise TypeError(f"task {task.name!r}: primary {task.primary!r} must be one of its columns "
                        f"{keys} with the same lower_is_better")
    missing = [k for k in PRESET_KEYS if k not in task.presets]
    bad = [k for k, v in task.presets.items() if not (isinstance(v, tuple) and len(v) == 2)]
    if missing or bad or not task.default_upsamplers or not task.quick_upsamplers:
        raise TypeError(f"task {task.name!r}: presets need every key of PRESET_KEYS as a "
                        f"(default, quick) pair (missing {missing}, malformed {bad}) and "
                        "default_upsamplers / quick_upsamplers must be non-empty")


def _to_device(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a namedtuple
        return type(obj)(*(_to_device(o, device) for o in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj
