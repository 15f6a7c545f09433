"""A tiny task that is nothing like segmentation, to show that ``sapa compare`` is task-generic.

- samples are dicts ``{"index", "image", "target"}`` of different sizes, and the loaders'
  ``collate`` keeps them as a list (as detection's does), so one batch holds images of several
  sizes and the evaluation runs with ``eval_batch_size`` 1;
- the model is one convolution at half resolution followed by the upsampler under test;
- the meter GATHERS per-image errors across processes and reports their median (a sum of
  per-process medians would be wrong) and their exactly rounded mean, with a lower-is-better
  primary metric and a non-float extra.

Run as a script it is ``sapa`` with this task registered (``python fake_task.py compare
--task fake ...``), which is how ``torchrun`` starts it in the DDP test.
"""
from __future__ import annotations

import contextlib
import math
import statistics
import sys
from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from sapa import build_upsampler
from sapa.errors import UsageError
from sapa.tasks import register_task, unregister_task
from sapa.tasks.base import Column, Task

SIZES = (8, 12, 16)  # even: one 2x upsampling restores them


class RandomImages(torch.utils.data.Dataset):
    """``num`` samples of random sizes from ``SIZES``; the target is a smoothed channel mean."""

    def __init__(self, num: int, seed: int, split: str, scale: float = 1.0):
        g = torch.Generator().manual_seed(seed * 2 + (split == "val"))
        self.samples = []
        for i in range(num):
            h, w = (SIZES[int(j)] for j in torch.randint(len(SIZES), (2,), generator=g))
            image = torch.randn(3, h, w, generator=g)
            target = scale * F.avg_pool2d(image.mean(0, keepdim=True)[None], 3, 1, 1)[0, 0]
            self.samples.append({"index": i, "image": image, "target": target})

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


class OneConv(nn.Module):
    """Takes a list of ``3 x H x W`` images of any even sizes, as torchvision's detectors do,
    and returns a list of ``H x W`` maps."""

    def __init__(self, upsampler: str):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)
        self.up = build_upsampler(upsampler, 1, scale_factor=2)

    def forward(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.up(self.conv(F.avg_pool2d(x[None], 2)))[0, 0] for x in images]


class MedianErrorMeter:
    """Per-image mean absolute errors, gathered from every process."""

    def __init__(self):
        self.errors: list[tuple[int, float]] = []
        self.synced = False

    def update(self, outputs, batch) -> None:
        for pred, sample in zip(outputs, batch):
            self.errors.append((sample["index"], float((pred - sample["target"]).abs().mean())))

    def sync(self, reducer) -> None:
        gathered = reducer.all_gather_object(self.errors)
        assert len(gathered) == reducer.world_size
        self.errors = sorted(e for part in gathered for e in part)
        self.synced = True

    def compute(self) -> dict:
        assert self.synced, "compute() before sync()"
        if not self.errors:
            raise ValueError("no validation image was evaluated")
        values = [e for _, e in self.errors]
        return {"median_err": statistics.median(values), "mean_err": math.fsum(values) / len(values),
                "num_images": len(values), "errors": values}


class FakeTask(Task):
    """A fake task for the harness's tests: random images of mixed sizes, list batches, a
    gathered median."""

    name = "fake"
    primary = "median_err"
    lower_is_better = True
    columns = (Column("median_err", "median err.", scale=1.0, digits=4, lower_is_better=True),
               Column("mean_err", "mean err.", scale=1000.0, digits=1, lower_is_better=True))
    table_note = "Per-image mean absolute error, median and mean over the validation images."
    default_upsamplers = ("nearest", "bilinear")
    quick_upsamplers = ("nearest",)
    presets = {
        "seeds": ([0, 1], [0]), "iters": (4, 4), "batch_size": (4, 4), "eval_batch_size": (1, 1),
        "image_size": (16, 16), "num_train": (12, 12), "num_val": (7, 7), "eval_every": (2, 2),
        "ckpt_every": (1, 1), "lr": (1e-2, 1e-2), "weight_decay": (0.0, 0.0),
    }

    def add_arguments(self, group) -> None:
        group.add_argument("--fake-scale", type=float, default=1.0,
                           help="multiplies the targets (default: %(default)s)")

    def resolve(self, args, settings) -> dict:
        if not args.fake_scale > 0:
            raise UsageError(f"--fake-scale must be > 0, got {args.fake_scale}")
        if settings["data"] not in (None, "random"):
            raise UsageError(f"--data must be 'random' for --task fake, got {settings['data']!r}")
        return {"data": "random", "fake_scale": args.fake_scale}

    def build_datasets(self, config):
        seed, scale = config["data_seed"], config["fake_scale"]
        return (RandomImages(config["num_train"], seed, "train", scale),
                RandomImages(config["num_val"], seed, "val", scale))

    def collate(self):
        return list

    def build_model(self, config, upsampler, train_set):
        return OneConv(upsampler)

    def loss(self, model, batch):
        preds = model([s["image"] for s in batch])
        return torch.stack([F.mse_loss(p, s["target"]) for p, s in zip(preds, batch)]).mean()

    def predict(self, model, batch):
        return model([s["image"] for s in batch])

    def make_meter(self, config, val_set):
        return MedianErrorMeter()

    def example_input(self, config, device):
        s = config["image_size"]
        return [torch.zeros(3, s, s, device=device)]

    def draw_figures(self, out_dir, models, curves, val_set, device):
        from sapa import viz

        name = next(iter(models))
        with torch.no_grad():
            pred = models[name]([val_set[0]["image"].to(device)])[0].cpu()
        fig = viz.plot_features(val_set[0]["image"].permute(1, 2, 0).sigmoid().numpy(),
                                {name: {"feature": viz.feature_rgb(pred[None]), "kernel": None}})
        fig.suptitle(f"{len(curves[name])} seed(s)")
        return [viz.save_figure(fig, f"{out_dir}/fake.png")]


@contextlib.contextmanager
def registered() -> Iterator[FakeTask]:
    """A new ``FakeTask``, known to ``sapa.tasks.get_task("fake")`` inside the block."""
    task = FakeTask()
    register_task(task)
    try:
        yield task
    finally:
        unregister_task(task.name)


if __name__ == "__main__":
    from sapa import cli

    register_task(FakeTask())
    sys.exit(cli.main(sys.argv[1:]))
