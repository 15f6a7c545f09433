"""A run's checkpoint read back: for ``--resume`` and for the figures (``load_checkpoint``), and
for ``sapa export`` (``load_checkpoint_run``: the trained model rebuilt through its task). Every
way it can be unreadable (empty, truncated, not a checkpoint, of another run or other settings) is
a ``UsageError`` naming the file and what to do.

What a checkpoint holds is written by ``sapa.experiments.trainer.train_run``: ``iter``,
``model``, ``optimizer``, ``scheduler``, ``train_s``, ``curves``, ``rng``, ``config`` (the
training settings), ``seed``, and since this version ``upsampler`` and ``run_config`` (the
whole configuration of the comparison, what ``Task.build_model`` takes); a finished run's also
holds ``metrics``. Checkpoints of earlier versions are identified, for ``sapa export``, by the
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

# settings that do not change a run's final numbers: --resume may use other values
NOT_RESULT_KEYS = ("ckpt_every", "eval_every", "workers", "eval_batch_size")
REQUIRED_KEYS = ("iter", "model", "optimizer", "scheduler", "train_s", "curves", "rng", "config",
                 "seed")
RESUME_FIX = "delete it to restart this run from step 0"


def config_differences(old: dict, new: dict) -> list[str]:
    """``"key: old there, new now"`` for every setting that changes a run's numbers and
    differs between the recorded ``old`` and the current ``new`` configuration."""
    return [f"{k}: {old.get(k)!r} there, {new.get(k)!r} now"
            for k in sorted(set(old) | set(new))
            if k not in NOT_RESULT_KEYS and old.get(k) != new.get(k)]


def load_checkpoint(path: str, *, upsampler: str | None = None, seed: int | None = None,
                    config: dict | None = None, fix: str = RESUME_FIX) -> dict:
    """The checkpoint at ``path``, checked to be a ``sapa compare`` checkpoint of the run
    ``(upsampler, seed)`` under ``config`` (each check skipped when its argument is ``None``;
    checkpoints of earlier versions, without ``upsampler`` / ``run_config``, are checked on
    what they hold). ``fix``: what the error messages tell the user to do.

    Raises:
        UsageError: naming ``path``: unreadable (empty, truncated, not a torch file), not a
            ``sapa compare`` checkpoint, or of another run or other settings.
    """
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types for a bad file
        detail = " ".join(str(exc).split("\n")[0].split()) or type(exc).__name__
        raise UsageError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {detail}); "
                         f"{fix}") from None
    if not isinstance(ck, dict) or any(k not in ck for k in REQUIRED_KEYS):
        missing = [k for k in REQUIRED_KEYS if not isinstance(ck, dict) or k not in ck]
        raise UsageError(f"{path} is not a sapa compare checkpoint (no {', '.join(missing)}); "
                         f"{fix}")
    if seed is not None and ck["seed"] != seed:
        raise UsageError(f"checkpoint {path} is of seed {ck['seed']!r}, not {seed}; {fix}")
    if upsampler is not None and ck.get("upsampler", upsampler) != upsampler:
        raise UsageError(f"checkpoint {path} is of upsampler {ck['upsampler']!r}, not "
                         f"{upsampler!r}; {fix}")
    if config is not None:
        old = ck.get("run_config") or ck["config"]
        new = config if "run_config" in ck else {k: config.get(k) for k in old}
        diff = config_differences(old, new)
        if diff:
            raise UsageError(f"checkpoint {path} was written with other settings ("
                             + "; ".join(diff) + f"); {fix}, or resume with those settings")
    return ck


# ---- the trained model, for sapa export --------------------------------------------------------

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


def _run_from_results(checkpoint: str, results: str | None) -> tuple[str, dict]:
    """``(upsampler, run configuration)`` of an earlier version's checkpoint, from the row of
    its comparison's ``results.json`` that names it."""
    path = results or _results_path(checkpoint)
    try:
        data = load_results(path)
    except (ValueError, OSError) as exc:
        raise UsageError(f"--checkpoint {checkpoint} records no run configuration (written by an "
                         f"earlier sapa), and {path} cannot be read: {exc}") from None
    if data is None:
        raise UsageError(f"--checkpoint {checkpoint} records no run configuration (written by an "
                         f"earlier sapa) and there is no {path}; pass the comparison's "
                         "results.json with --results")
    out = os.path.dirname(os.path.abspath(path))
    target = os.path.abspath(checkpoint)
    for row in data.get("rows", []):
        if os.path.abspath(os.path.join(out, row.get("checkpoint", ""))) == target:
            return row["upsampler"], {"task": "segmentation", **data.get("config", {})}
    raise UsageError(f"no row of {path} names the checkpoint {checkpoint} (an unfinished run of "
                     "an earlier sapa?): finish it with sapa compare --resume, then export it")


def load_checkpoint_run(checkpoint: str, results: str | None = None) -> TrainedRun:
    """Rebuild the model of a ``sapa compare`` run from its ``checkpoint.pt``: the task's
    ``build_model`` on the recorded configuration and upsampler (the task's datasets are built
    too, as the comparison built them: a model may take its class count from them), then the
    trained weights. ``results``: the comparison's ``results.json``, for checkpoints of earlier
    versions that do not record their run (default: two folders above the checkpoint's)."""
    if not os.path.isfile(checkpoint):
        raise UsageError(f"--checkpoint: no such file {checkpoint}")
    ckpt = load_checkpoint(checkpoint, fix="export a checkpoint that sapa compare wrote")
    if ckpt.get("upsampler") and ckpt.get("run_config"):
        upsampler, config = ckpt["upsampler"], dict(ckpt["run_config"])
    else:
        upsampler, config = _run_from_results(checkpoint, results)
    task = get_task(config.get("task", "segmentation"))
    train_set, _ = task.build_datasets(config)
    model = task.build_model(config, upsampler, train_set)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise UsageError(f"--checkpoint: the weights in {checkpoint} do not fit the model its "
                         f"configuration builds ({exc})") from None
    return TrainedRun(task, config, upsampler, ckpt["seed"], model.eval())
