"""A trained model back from a ``sapa compare`` checkpoint.

A run's ``runs/<upsampler>-seed<k>/checkpoint.pt`` holds the model's state dict and, since
``sapa export`` exists, ``"run"``: the upsampler spec and the run configuration (task, model,
data...) that ``Task.build_model`` takes. Checkpoints written before that are identified by the
``results.json`` of their comparison (two folders up), whose rows name their checkpoints.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import UsageError
from ..tasks import get_task
from ..tasks.base import Task
from .results import RESULTS_JSON, load_results


@dataclass
class TrainedRun:
    """A model rebuilt from a checkpoint: ``model`` in eval mode, with the trained weights."""

    task: Task
    config: dict
    upsampler: str
    seed: int | None
    model: nn.Module


def _results_path(checkpoint: str) -> str:
    # <out>/runs/<run>/checkpoint.pt -> <out>/results.json
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(checkpoint)))), RESULTS_JSON)


def _run_from_results(checkpoint: str, results: str | None) -> dict:
    path = results or _results_path(checkpoint)
    try:
        data = load_results(path)
    except (ValueError, OSError) as exc:
        raise UsageError(f"--checkpoint {checkpoint} records no run configuration (written before "
                         f"sapa export existed), and {path} cannot be read: {exc}") from None
    if data is None:
        raise UsageError(f"--checkpoint {checkpoint} records no run configuration (written before "
                         f"sapa export existed) and there is no {path}; pass the comparison's "
                         "results.json with --results")
    out = os.path.dirname(os.path.abspath(path))
    target = os.path.abspath(checkpoint)
    for row in data.get("rows", []):
        if os.path.abspath(os.path.join(out, row.get("checkpoint", ""))) == target:
            return {"upsampler": row["upsampler"], "seed": row.get("seed"),
                    "config": {"task": "segmentation", **data.get("config", {})}}
    raise UsageError(f"no row of {path} names the checkpoint {checkpoint} (an unfinished run of "
                     "an older sapa?): finish it with sapa compare --resume, then export it")


def load_checkpoint_run(checkpoint: str, results: str | None = None) -> TrainedRun:
    """Rebuild the model of a ``sapa compare`` run from its ``checkpoint.pt``: the task's
    ``build_model`` on the recorded configuration and upsampler (the task's datasets are built
    too, as the comparison built them: a model may take its class count from them), then the
    trained weights. ``results``: the comparison's ``results.json``, for checkpoints that do not
    record their run (default: two folders above the checkpoint's)."""
    if not os.path.isfile(checkpoint):
        raise UsageError(f"--checkpoint: no such file {checkpoint}")
    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise UsageError(f"--checkpoint: cannot read {checkpoint} as a torch checkpoint "
                         f"({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise UsageError(f"--checkpoint: {checkpoint} is not a sapa compare checkpoint (no "
                         "'model' state dict)")
    run = ckpt.get("run") or _run_from_results(checkpoint, results)
    config, upsampler = dict(run["config"]), run["upsampler"]
    task = get_task(config.get("task", "segmentation"))
    train_set, _ = task.build_datasets(config)
    model = task.build_model(config, upsampler, train_set)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise UsageError(f"--checkpoint: the weights in {checkpoint} do not fit the model its "
                         f"configuration builds ({exc})") from None
    return TrainedRun(task, config, upsampler, ckpt.get("seed", run.get("seed")), model.eval())
