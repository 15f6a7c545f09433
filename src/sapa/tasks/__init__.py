"""Dense-prediction tasks: data sets, models' wiring, losses and metrics, one sub-package per task.

``get_task(name)`` imports a task's package only when it is asked for (segmentation needs
scipy and scikit-image, detection torchvision and pycocotools, ...), so ``import sapa.tasks``
costs nothing. The contract a task fills is in ``sapa.tasks.base``.
"""
from __future__ import annotations

import importlib
import importlib.util

from ..errors import UsageError
from .base import Task, check_task

# --task name -> the package whose ``TASK`` implements it
TASKS: dict[str, str] = {
    "segmentation": "sapa.tasks.segmentation",
    "depth": "sapa.tasks.depth",
    "matting": "sapa.tasks.matting",
    "detection": "sapa.tasks.detection",
}
_registered: dict[str, Task] = {}


def list_tasks() -> list[str]:
    """Every ``--task`` name, in ``TASKS`` order, then the ones added by ``register_task``."""
    return [*TASKS, *(n for n in _registered if n not in TASKS)]


def register_task(task: Task) -> None:
    """Make ``task`` available as ``get_task(task.name)`` in this process (a task defined outside
    ``sapa``, e.g. in a test or in a user's launcher script that then calls ``sapa.cli.main``)."""
    check_task(task)
    _registered[task.name] = task


def unregister_task(name: str) -> None:
    """Undo ``register_task(task)`` for ``task.name == name`` (nothing if it was not registered)."""
    _registered.pop(name, None)


def get_task(name: str) -> Task:
    """The task called ``name``; ``UsageError`` listing the known names if there is none, or if
    its package is not part of this installation of ``sapa`` (yet)."""
    if name in _registered:
        return _registered[name]
    if name not in TASKS:
        raise UsageError(f"--task: unknown task {name!r}; known: {', '.join(list_tasks())}")
    module = TASKS[name]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise UsageError(f"--task {name}: this installation of sapa has no {module} yet; "
                             f"available: {', '.join(available_tasks())}") from None
        if exc.name and exc.name.split(".")[0] != "sapa":  # an optional dependency
            raise UsageError(f"--task {name} needs the Python package {exc.name!r}, which is "
                             "not installed (see the extras of sapa's pyproject.toml)") from exc
        raise
    task = getattr(mod, "TASK", None)
    check_task(task)
    return task


def available_tasks() -> list[str]:
    """The ``list_tasks()`` names whose package is installed (found without importing it)."""
    return [n for n in list_tasks() if n in _registered or importlib.util.find_spec(TASKS[n])]


__all__ = ["TASKS", "Task", "get_task", "list_tasks", "available_tasks", "register_task",
           "unregister_task"]
