"""Training and evaluation of one run of a task, resumable from its checkpoint.

The task (``sapa.tasks.base.Task``) supplies the loss of a batch, the inference of an
evaluation batch and the meter; this module owns the optimiser, the schedule, the batch
stream, evaluation sharded across processes, checkpoints and the progress bar.

The batches are a pure function of ``(seed, iteration)``: iteration ``t`` takes positions
``[t B, (t + 1) B)`` of the stream of per-epoch permutations of the training set (each drawn
from a generator seeded with ``(seed, epoch)``), and process ``r`` of ``W`` takes the ``r``-th
slice of ``B / W`` of them. A run restarted from a checkpoint at iteration ``t`` therefore sees
exactly the batches the uninterrupted run would have seen (with in-memory data, which needs
no random augmentation, it computes the same numbers).
"""
from __future__ import annotations

import math
import numbers
import random
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..errors import UsageError
from ..tasks.base import Task
from . import distributed as D
from .files import atomic_torch_save


@dataclass(frozen=True)
class TrainConfig:
    """How one run trains: ``iters`` steps of AdamW on global batches of ``batch_size``,
    the learning rate warmed up linearly over the first 5% then decayed with a cosine;
    validation every ``eval_every`` steps (and at the end), a checkpoint every ``ckpt_every``."""

    iters: int
    batch_size: int
    lr: float = 2e-3
    weight_decay: float = 1e-4
    eval_every: int = 100
    ckpt_every: int = 50
    eval_batch_size: int = 16
    workers: int = 0

    def __post_init__(self):
        """Checks every field; ``UsageError`` naming the command-line option."""
        for name in ("iters", "batch_size", "eval_every", "ckpt_every", "eval_batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UsageError(f"{_option(name)} must be a positive int, got {v!r}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise UsageError(f"--workers must be an int >= 0, got {self.workers!r}")
        for name in ("lr", "weight_decay"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise UsageError(f"{_option(name)} must be a finite number >= 0, got {v!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def _option(field: str) -> str:
    return "--" + field.replace("_", "-")


class StreamBatchSampler(torch.utils.data.Sampler):
    """This process's share of the global batches ``start .. stop - 1`` (see the module doc)."""

    def __init__(self, num_samples: int, batch_size: int, seed: int, start: int, stop: int,
                 rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ValueError(f"--batch-size {batch_size} must be divisible by the number of "
                             f"processes ({world_size})")
        if num_samples < 1:
            raise ValueError("the training set is empty")
        self.n, self.batch, self.seed = num_samples, batch_size, seed
        self.start, self.stop, self.rank, self.world = start, stop, rank, world_size
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=g)}
        return self._perms[epoch]

    def global_batch(self, t: int) -> list[int]:
        pos = range(t * self.batch, (t + 1) * self.batch)
        return [int(self._perm(p // self.n)[p % self.n]) for p in pos]

    def __iter__(self):
        per = self.batch // self.world
        for t in range(self.start, self.stop):
            yield self.global_batch(t)[self.rank * per : (self.rank + 1) * per]

    def __len__(self) -> int:
        return self.stop - self.start


def lr_factor(t: int, iters: int) -> float:
    """Linear warm-up over the first 5% of the steps, then cosine decay to 0."""
    warm = max(1, iters // 20)
    if t < warm:
        return (t + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (t - warm) / max(1, iters - warm)))


@torch.no_grad()
def evaluate(task: Task, model: nn.Module, dataset, config: dict, ctx: D.DistContext,
             batch_size: int = 16, workers: int = 0) -> dict:
    """``task``'s meter's ``compute()`` for ``model`` on ``dataset``: process ``r`` of ``W``
    evaluates the samples ``r, r + W, ...`` and the meter syncs across the processes."""
    was_training = model.training
    model.eval()
    meter = task.make_meter(config, dataset)
    shard = torch.utils.data.Subset(dataset, range(ctx.rank, len(dataset), ctx.world_size))
    loader = torch.utils.data.DataLoader(shard, batch_size=batch_size, num_workers=workers,
                                         collate_fn=task.collate())
    for batch in loader:
        batch = task.to_device(batch, ctx.device)
        meter.update(task.predict(model, batch), batch)
    meter.sync(D.ProcessGroupReducer(ctx))
    model.train(was_training)
    # the primary metric must be defined; another column may be NaN where it is undefined on
    # these data (a COCO AP of an area range without objects): its row holds None, shown as —
    try:
        metrics = meter.compute()
    except ValueError as exc:  # the contract: nothing to evaluate (a data problem)
        raise UsageError(f"the validation set gives nothing to evaluate ({exc}): check --data "
                         "and --num-val") from exc
    bad = [f"{c.key}={metrics[c.key]!r}" for c in task.columns
           if _real(metrics.get(c.key)) and (math.isinf(metrics[c.key]) or (
               c.key == task.primary and math.isnan(metrics[c.key])))]
    if bad:
        raise UsageError(f"the validation metric {', '.join(bad)} is undefined or infinite on "
                         "this validation set (nothing to evaluate, or the model's outputs are "
                         "not finite): check --data and --num-val")
    return metrics


def _real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _rng_state():
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": np.random.get_state()}


def _set_rng_state(s):
    torch.set_rng_state(s["torch"])
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])


def format_metric(task: Task, metrics: dict, key: str | None = None) -> str:
    """``"<header> <value>"`` of metric ``key`` (default: the primary) as ``results.md`` prints
    it (scaled, rounded)."""
    col = next(c for c in task.columns if c.key == (key or task.primary))
    return f"{col.header} {metrics[col.key] * col.scale:.{col.digits}f}"


def train_run(task: Task, model: nn.Module, train_set, val_set, config: dict, cfg: TrainConfig,
              ctx: D.DistContext, *, seed: int, ckpt_path: str, checkpoint: dict | None = None,
              desc: str = "", upsampler: str = "") -> dict:
    """Train ``model`` (already seeded and built identically on every process) with
    ``task.loss`` and evaluate it with ``task``'s meter.

    Args:
        config: the run configuration (what ``task.make_meter`` is given).
        checkpoint: a state saved by an interrupted call (``None``: start afresh, with
            Python's and NumPy's generators seeded with ``seed``; the caller seeds torch's
            before building the model).
        upsampler: the spec under test, recorded in the checkpoint with ``config`` (so that
            ``--resume`` can tell a checkpoint of other settings).
        ckpt_path: where rank 0 saves the checkpoint every ``cfg.ckpt_every`` steps and at
            the end (atomically).

    Returns:
        the final checkpoint dict: ``"metrics"`` (of ``evaluate``), ``"train_s"``,
        ``"curves"`` (``iters``/``loss`` per step and ``val_iters``/``val_<primary>``),
        ``"model"`` (the state dict) and the optimiser state.
    """
    model = model.to(ctx.device)
    net = DistributedDataParallel(model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None) \
        if ctx.distributed else model
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: lr_factor(t, cfg.iters))
    val_key = f"val_{task.primary}"
    start, train_s = 0, 0.0
    curves = {"iters": [], "loss": [], "val_iters": [], val_key: []}
    if checkpoint is None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
    else:
        model.load_state_dict(checkpoint["model"])
        opt.load_state_dict(checkpoint["optimizer"])
        sched.load_state_dict(checkpoint["scheduler"])
        start, train_s, curves = checkpoint["iter"], checkpoint["train_s"], checkpoint["curves"]
        _set_rng_state(checkpoint["rng"])
        if "metrics" in checkpoint:  # finished, killed before its row was written
            return checkpoint

    def state(t, metrics=None):
        s = {"iter": t, "model": model.state_dict(), "optimizer": opt.state_dict(),
             "scheduler": sched.state_dict(), "train_s": train_s, "curves": curves,
             "rng": _rng_state(), "config": cfg.to_dict(), "seed": seed,
             "upsampler": upsampler, "run_config": config}
        if metrics is not None:
            s["metrics"] = metrics
        return s

    def validate():
        D.broadcast_buffers(ctx, model)
        return evaluate(task, model, val_set, config, ctx, cfg.eval_batch_size, cfg.workers)

    sampler = StreamBatchSampler(len(train_set), cfg.batch_size, seed, start, cfg.iters,
                                 ctx.rank, ctx.world_size)
    # its own generator: iterating a loader draws a seed, which must not come from the global
    # RNG that a resumed run restored (models with stochastic depth or dropout draw from it)
    loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler,
                                         num_workers=cfg.workers, collate_fn=task.collate(),
                                         persistent_workers=False,
                                         generator=torch.Generator().manual_seed(seed * 1_000_003 + start))
    bar = tqdm(total=cfg.iters, initial=start, desc=desc, leave=False, dynamic_ncols=True,
               disable=not ctx.is_main or None)
    net.train()
    t, m = start, None
    tic = time.perf_counter()  # training time counts data loading, not evaluation or saving
    for batch in loader:
        loss = task.loss(net, task.to_device(batch, ctx.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        loss_val = float(D.all_reduce_sum(ctx, loss.detach()[None].cpu())[0]) / ctx.world_size
        if not math.isfinite(loss_val):  # before the step: the last checkpoint stays finite
            raise UsageError(
                f"{desc or 'training'}: the training loss is {loss_val} at step {t + 1}: the "
                "training diverged (try a lower --lr) or the batch had nothing to learn from "
                "(check --data)")
        opt.step()
        sched.step()
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)
        train_s += time.perf_counter() - tic
        t += 1
        curves["iters"].append(t)
        curves["loss"].append(loss_val)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_val:.3f}")
        last = t == cfg.iters
        if t % cfg.eval_every == 0 or last:
            m = validate()
            curves["val_iters"].append(t)
            curves[val_key].append(m[task.primary])
            net.train()
            if bar.disable and ctx.is_main:  # no progress bar (not a terminal): log a line
                print(f"    {desc} step {t}/{cfg.iters}: loss {loss_val:.3f}, "
                      f"val {format_metric(task, m)}", flush=True)
        if (t % cfg.ckpt_every == 0 and not last) and ctx.is_main:
            atomic_torch_save(ckpt_path, state(t))
        tic = time.perf_counter()
    bar.close()
    if m is None:  # nothing left to train (a checkpoint at the last step)
        m = validate()
    final = state(t, metrics=m)
    if ctx.is_main:
        atomic_torch_save(ckpt_path, final)
    return final
