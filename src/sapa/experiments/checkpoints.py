"""A run's checkpoint read back for ``--resume`` and for the figures: every way it can be
unreadable (empty, truncated, not a checkpoint, of another run or other settings) is a
``UsageError`` naming the file and what to do.

What a checkpoint holds is written by ``sapa.experiments.trainer.train_run``: ``iter``,
``model``, ``optimizer``, ``scheduler``, ``train_s``, ``curves``, ``rng``, ``config`` (the
training settings), ``seed``, and since this version ``upsampler`` and ``run_config`` (the
whole configuration of the comparison); a finished run's also holds ``metrics``.
"""
from __future__ import annotations

import torch

from ..errors import UsageError

# settings that do not change a run's final numbers: --resume may use other values
NOT_RESULT_KEYS = ("ckpt_every", "eval_every", "workers", "eval_batch_size")
REQUIRED_KEYS = ("iter", "model", "optimizer", "scheduler", "train_s", "curves", "rng", "config",
                 "seed")


def config_differences(old: dict, new: dict) -> list[str]:
    """``"key: old there, new now"`` for every setting that changes a run's numbers and
    differs between the recorded ``old`` and the current ``new`` configuration."""
    return [f"{k}: {old.get(k)!r} there, {new.get(k)!r} now"
            for k in sorted(set(old) | set(new))
            if k not in NOT_RESULT_KEYS and old.get(k) != new.get(k)]


def load_checkpoint(path: str, *, upsampler: str | None = None, seed: int | None = None,
                    config: dict | None = None) -> dict:
    """The checkpoint at ``path``, checked to be a ``sapa compare`` checkpoint of the run
    ``(upsampler, seed)`` under ``config`` (each check skipped when its argument is ``None``;
    checkpoints of earlier versions, without ``upsampler`` / ``run_config``, are checked on
    what they hold).

    Raises:
        UsageError: naming ``path``: unreadable (empty, truncated, not a torch file), not a
            ``sapa compare`` checkpoint, or of another run or other settings.
    """
    fix = "delete it to restart this run from step 0"
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
