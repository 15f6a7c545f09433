"""``sapa compare --task matting``: the A2U matting network with each upsampler (paper Table 5)."""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch
import torch.nn as nn

from ...errors import UsageError, check_installed
from ...models.a2u_matting import STRIDE, A2UMatting
from ..base import Column, Task
from .data import collate, model_input
from .folders import AdobeTrain, CompositionTest, check_layout
from .inference import predict_alpha
from .loss import matting_loss
from .metrics import MattingMeter
from .synthetic import SyntheticMatting

MATTES_PNG = "mattes.png"
FIGURE_SAMPLES = 3
REAL_IMAGE_SIZE = 320
DEFAULT_WIDTH = 0.25


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


class MattingTask(Task):
    """Image matting (SAPA Table 5): the A2U matting network (ResNet-34-style max-pool encoder,
    ASPP, decoder D4..D1 guided by the encoder features), trained with A2U's alpha and
    composition losses and evaluated with the official SAD, MSE, Grad and Conn on the
    trimap's unknown pixels; on generated soft mattes over photographs, or the Adobe Deep Image
    Matting / Composition-1k folders (--data)."""

    name = "matting"
    primary = "sad"
    lower_is_better = True
    columns = (
        Column("sad", "SAD", digits=4, lower_is_better=True),
        Column("mse", "MSE", digits=5, lower_is_better=True),
        Column("grad", "Grad", digits=4, lower_is_better=True),
        Column("conn", "Conn", digits=4, lower_is_better=True),
    )
    table_note = (
        "Errors as the official MATLAB evaluation of Deep Image Matting computes them, over "
        "the trimap's unknown pixels, per image and averaged over the validation images: SAD "
        "and Conn in thousands (sum / 1000, alphas in [0, 1]), Grad in thousands (sum / 1000 "
        "of squared Gaussian-gradient differences, sigma 1.4), MSE a mean. Lower is better. "
        "See docs/matting.md.")
    default_upsamplers = ("bilinear", "carafe", "indexnet-hin", "a2u", "sapa-i", "sapa-b", "sapa-g")
    quick_upsamplers = ("bilinear", "sapa-b")
    presets = {
        #                  default   --quick
        "seeds": ([0, 1, 2], [0]),
        "iters": (450, 300),
        "batch_size": (8, 8),
        "eval_batch_size": (16, 16),
        "image_size": (64, 64),
        "num_train": (800, 400),
        "num_val": (100, 50),
        "eval_every": (150, 150),
        "ckpt_every": (50, 50),
        "lr": (5e-3, 5e-3),
        "weight_decay": (1e-4, 1e-4),
    }

    # ---- command line and configuration ------------------------------------------------------

    def add_arguments(self, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--matting-width", type=float,
                           help=f"channel multiplier of the A2U matting network (default "
                                f"{DEFAULT_WIDTH}; 1 is the paper's ResNet-34 widths 64/128/256)")
        group.add_argument("--bg-dir",
                           help="with --data: the folder of training backgrounds (default "
                                "<data>/Training_set/bg; A2U uses COCO train2014)")

    def resolve(self, args: argparse.Namespace, settings: dict) -> dict:
        width = getattr(args, "matting_width", None)
        width = DEFAULT_WIDTH if width is None else width
        if not (isinstance(width, (int, float)) and 0 < width <= 4):
            raise UsageError(f"--matting-width must be a number in (0, 4], got {width!r}")
        data = settings.get("data")
        bg_dir = getattr(args, "bg_dir", None)
        out = {"matting_width": float(width), "bg_dir": None}
        if data in (None, "synthetic"):
            check_installed("skimage", "sklearn", "scipy", needed_for="the generated matting set",
                            extra="experiments")
            if bg_dir is not None:
                raise UsageError("--bg-dir needs --data (the generated set makes its own backgrounds)")
            out["data"] = "synthetic"
            size = settings["image_size"]
        else:
            check_installed("PIL", "scipy", "skimage", needed_for="--data (the Adobe matting folders)",
                            extra="experiments")
            check_layout(data)
            bg_dir = os.path.join(data, "Training_set", "bg") if bg_dir is None else bg_dir
            if not os.path.isdir(bg_dir):
                raise UsageError(f"--bg-dir {bg_dir}: folder not found (training backgrounds; "
                                 "default <data>/Training_set/bg)")
            out.update(data=os.path.abspath(data), bg_dir=os.path.abspath(bg_dir))
            # real data: bigger crops and all samples unless asked otherwise
            explicit = getattr(args, "image_size", None) is not None
            size = settings["image_size"] if explicit else REAL_IMAGE_SIZE
            out["image_size"] = size
            for key in ("num_train", "num_val"):
                out[key] = getattr(args, key, None)
        if isinstance(size, bool) or not isinstance(size, int) or size < STRIDE or size % STRIDE:
            raise UsageError(f"--image-size must be a positive multiple of {STRIDE} (the "
                             f"network's output stride), got {size!r}")
        return out

    # ---- data --------------------------------------------------------------------------------

    def build_datasets(self, config: dict):
        seed = config.get("data_seed", 0)
        if config["data"] == "synthetic":
            return (SyntheticMatting("train", config["num_train"], config["image_size"], seed),
                    SyntheticMatting("val", config["num_val"], config["image_size"], seed))
        return (AdobeTrain(config["data"], config["bg_dir"], config["image_size"], seed,
                           config["num_train"]),
                CompositionTest(config["data"], config["num_val"]))

    def collate(self):
        return collate

    # ---- model, loss, inference ----------------------------------------------------------------

    def build_model(self, config: dict, upsampler: str, train_set) -> nn.Module:
        return A2UMatting(upsampler, width=config["matting_width"])

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        pred = model(model_input(batch["image"], batch["trimap"]))
        return matting_loss(pred, batch["alpha"], batch["trimap"], batch["fg"], batch["bg"],
                            batch["image"])

    def predict(self, model: nn.Module, batch: dict) -> list[torch.Tensor]:
        """``H x W`` uint8 mattes (CPU), one per image; whole images of different sizes one by one."""
        images, trimaps = batch["image"], batch["trimap"]
        if isinstance(images, torch.Tensor):
            return list(predict_alpha(_unwrap(model), images, trimaps).cpu())
        return [predict_alpha(_unwrap(model), im[None], tr[None])[0].cpu()
                for im, tr in zip(images, trimaps)]

    def make_meter(self, config: dict, val_set) -> MattingMeter:
        return MattingMeter()

    def example_input(self, config: dict, device: torch.device) -> torch.Tensor:
        s = config["image_size"]
        return torch.zeros(1, 4, s, s, device=device)

    # ---- figures -------------------------------------------------------------------------------

    def draw_figures(self, out_dir: str, models: dict, curves: dict, val_set,
                     device: torch.device) -> list[str]:
        """``mattes.png``: the first validation images, their trimaps, ground truth and each
        upsampler's matte, with a zoom on the window of most fine structure (Figure 6)."""
        from ...viz import plot_mattes, save_figure

        samples = [val_set[i] for i in range(min(FIGURE_SAMPLES, len(val_set)))]
        preds = {}
        for name, model in models.items():
            preds[name] = [predict_alpha(model, s["image"][None].to(device),
                                         s["trimap"][None].to(device))[0].cpu().numpy()
                           for s in samples]
        images = [np.round(s["image"].permute(1, 2, 0).numpy() * 255).astype(np.uint8) for s in samples]
        trimaps = [s["trimap"][0].numpy() for s in samples]
        alphas = [np.round(s["alpha"][0].numpy() * 255).astype(np.uint8) for s in samples]
        fig = plot_mattes(images, trimaps, alphas, preds)
        return [save_figure(fig, os.path.join(out_dir, MATTES_PNG))]
