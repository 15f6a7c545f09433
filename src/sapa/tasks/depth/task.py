"""``sapa compare --task depth``: BTS-style monocular depth estimation (the paper's Table 4)."""
from __future__ import annotations

import argparse
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...errors import UsageError, check_installed
from ...models.bts import BTS, ENCODERS, STRIDE, TORCHVISION_CACHE, cached_torchvision_weights
from ..base import Column, Task
from .loss import silog_loss
from .metrics import DepthMeter
from .nyu import MIN_HEIGHT, NYUDepthV2, is_nyu_root
from .synthetic import SyntheticDepth

ENCODER_DEFAULT = "resnet18"
BTS_SIZE_DEFAULT = 64
MAX_DEPTH_DEFAULT = 10.0
NYU_IMAGE_SIZE = 480  # BTS evaluates NYU's 480 x 640 frames at full resolution
FIGURE_SAMPLES = 3


def _is_synthetic(data) -> bool:
    return data in (None, "synthetic")


class DepthTask(Task):
    """Monocular depth estimation (Table 4): BTS on a torchvision ResNet whose decoder
    stages upconv5..upconv2 upsample with the upsampler under test, guided by the encoder skip
    at their target resolution (the last x2 stays nearest); BTS's scale-invariant log loss;
    delta1-3, AbsRel, SqRel, RMS, RMSlog, log10 per image, averaged. --data: 'synthetic'
    (rendered rooms with exact depth, the default) or a folder holding NYU Depth V2 as BTS
    distributes it, for which --image-size (rows) defaults to 480 and every sample is used
    unless --num-train / --num-val say otherwise. See docs/depth.md.

    Implementation: ``sapa.models.bts.BTS``, ``synthetic.SyntheticDepth``,
    ``nyu.NYUDepthV2``, ``loss.silog_loss``, ``metrics.DepthMeter``.
    """

    name = "depth"
    primary = "rmse"
    lower_is_better = True
    # Table 4's columns, in its order
    columns = (
        Column("delta1", "δ<1.25"),
        Column("delta2", "δ<1.25²"),
        Column("delta3", "δ<1.25³"),
        Column("abs_rel", "AbsRel", lower_is_better=True),
        Column("sq_rel", "SqRel", lower_is_better=True),
        Column("rmse", "RMS", lower_is_better=True),
        Column("rmse_log", "RMSlog", lower_is_better=True),
        Column("log10", "log10", lower_is_better=True),
    )
    table_note = ("Depth metrics as BTS computes them (Eigen et al. 2014): per image, then averaged "
                  "over the validation images; predictions clipped to [1e-3, max_depth], valid "
                  "pixels 1e-3 < ground truth < max_depth, the Eigen crop on NYU (none on the "
                  "generated rooms). δ: fraction of pixels with max(gt/pred, pred/gt) below the "
                  "threshold (higher is better); AbsRel, SqRel, RMS (m), RMSlog, log10: errors "
                  "(lower is better).")
    default_upsamplers = ("nearest", "bilinear", "carafe", "sapa-b", "sapa-g")
    quick_upsamplers = ("nearest", "sapa-b")
    presets = {
        #                  default   --quick
        "seeds": ([0, 1, 2], [0]),
        "iters": (360, 100),
        "batch_size": (8, 8),
        "eval_batch_size": (16, 16),
        "image_size": (64, 64),
        "num_train": (1024, 256),
        "num_val": (128, 64),
        "eval_every": (90, 50),
        "ckpt_every": (90, 50),  # a checkpoint (model + AdamW state) is ~140 MB at resnet18
        "lr": (1e-3, 1e-3),
        "weight_decay": (1e-2, 1e-2),
    }

    # ---- command line and configuration ------------------------------------------------------

    def add_arguments(self, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--encoder", choices=ENCODERS,
                           help=f"BTS's torchvision ResNet encoder (default: "
                                f"{ENCODER_DEFAULT}; the paper's: resnet50)")
        group.add_argument("--bts-size", type=int,
                           help=f"BTS decoder width F, a multiple of 16 >= 32 (default: "
                                f"{BTS_SIZE_DEFAULT}; BTS's: 512)")
        group.add_argument("--max-depth", type=float,
                           help=f"largest depth in metres, the output scale and the "
                                f"evaluation cap (default: {MAX_DEPTH_DEFAULT:g}, NYU's)")
        group.add_argument("--encoder-weights", metavar="PATH",
                           help=f"initialise the encoder from a ResNet state dict at "
                                f"PATH, or '{TORCHVISION_CACHE}' for torchvision's ImageNet "
                                f"weights from its cache (never downloaded; default: random)")

    def resolve(self, args: argparse.Namespace, settings: dict) -> dict:
        encoder = getattr(args, "encoder", None) or ENCODER_DEFAULT
        if encoder not in ENCODERS:
            raise UsageError(f"--encoder must be one of {list(ENCODERS)}, got {encoder!r}")
        bts_size = getattr(args, "bts_size", None)
        bts_size = BTS_SIZE_DEFAULT if bts_size is None else bts_size
        if isinstance(bts_size, bool) or not isinstance(bts_size, int) or bts_size < 32 or bts_size % 16:
            raise UsageError(f"--bts-size must be a multiple of 16, at least 32, got {bts_size!r}")
        max_depth = getattr(args, "max_depth", None)
        max_depth = MAX_DEPTH_DEFAULT if max_depth is None else float(max_depth)
        if not math.isfinite(max_depth) or max_depth <= 1e-3:
            raise UsageError(f"--max-depth must be a finite number of metres > 0.001, got {max_depth}")
        weights = getattr(args, "encoder_weights", None)
        if weights is not None:
            if weights == TORCHVISION_CACHE:
                cached_torchvision_weights(encoder)  # raises if not cached
            elif not os.path.isfile(weights):
                raise UsageError(f"--encoder-weights must be '{TORCHVISION_CACHE}' or an existing "
                                 f"file, got {weights!r}")
            else:
                weights = os.path.abspath(weights)
        data, size = settings.get("data"), settings.get("image_size")
        num_train, num_val = settings.get("num_train"), settings.get("num_val")
        if _is_synthetic(data):
            data = "synthetic"
            if isinstance(size, bool) or not isinstance(size, int) or size < 32 or size % 32:
                raise UsageError(f"--image-size must be a positive multiple of 32 for the "
                                 f"generated scenes (BTS's input stride), got {size!r}")
        else:
            if not os.path.isdir(data) or not is_nyu_root(data):
                raise UsageError(f"--data must be 'synthetic' or a folder with NYU Depth V2 as "
                                 f"BTS distributes it (nyudepthv2_test_files_with_gt.txt in it or "
                                 f"in its train_test_inputs/), got {data!r}")
            data = os.path.abspath(data)
            # real data: BTS's full resolution and every sample, unless asked otherwise
            size = NYU_IMAGE_SIZE if getattr(args, "image_size", None) is None else size
            num_train, num_val = getattr(args, "num_train", None), getattr(args, "num_val", None)
            if isinstance(size, bool) or not isinstance(size, int) or size < MIN_HEIGHT:
                raise UsageError(f"--image-size (the rows NYU frames are resized to; 480 = full "
                                 f"resolution) must be an int >= {MIN_HEIGHT}, got {size!r}")
        check_installed("torchvision", needed_for="the BTS depth model", extra="experiments")
        if data == "synthetic":
            check_installed("skimage", "sklearn", "scipy", needed_for="the generated depth scenes",
                            extra="experiments")
        else:
            check_installed("PIL", needed_for="reading NYU Depth V2", extra="experiments")
        return {"encoder": encoder, "bts_size": bts_size, "max_depth": max_depth,
                "encoder_weights": weights, "data": data, "image_size": size,
                "num_train": num_train, "num_val": num_val}

    # ---- data --------------------------------------------------------------------------------

    def build_datasets(self, config: dict):
        data, size = config.get("data"), config["image_size"]
        if _is_synthetic(data):
            seed = config.get("data_seed", 0)
            return (SyntheticDepth("train", config["num_train"], size, seed),
                    SyntheticDepth("val", config["num_val"], size, seed))
        return (NYUDepthV2(data, "train", size, config.get("num_train")),
                NYUDepthV2(data, "test", size, config.get("num_val")))

    # ---- model, loss, inference ----------------------------------------------------------------

    def build_model(self, config: dict, upsampler: str, train_set) -> nn.Module:
        return BTS(upsampler, config["encoder"], config["bts_size"], config["max_depth"],
                   config.get("encoder_weights"))

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        return silog_loss(model(batch["image"]), batch["depth"])

    def predict(self, model: nn.Module, batch) -> torch.Tensor:
        """Depth ``B x 1 x H x W`` at the ground truth's size: the input is padded (edge
        replication) to a multiple of 32 for the network, the output cropped back and, where the
        ground truth has another resolution (NYU below 480 rows), resized to it bilinearly."""
        image = batch["image"]
        h, w = image.shape[-2:]
        ph, pw = -h % STRIDE, -w % STRIDE
        if ph or pw:
            image = F.pad(image, (0, pw, 0, ph), mode="replicate")
        pred = model(image)[..., :h, :w]
        size = tuple(batch["depth"].shape[-2:])
        if size != (h, w):
            pred = F.interpolate(pred, size=size, mode="bilinear", align_corners=False)
        return pred

    def make_meter(self, config: dict, val_set) -> DepthMeter:
        return DepthMeter(1e-3, config["max_depth"], crop=getattr(val_set, "crop", None))

    def example_input(self, config: dict, device: torch.device) -> torch.Tensor:
        """One image as the network sees it (NYU: the resized 4:3 frame, padded to 32)."""
        h = config["image_size"]
        w = h if _is_synthetic(config.get("data")) else round(h * 4 / 3)
        return torch.zeros(1, 3, h + (-h % STRIDE), w + (-w % STRIDE), device=device)

    # ---- figures -------------------------------------------------------------------------------

    @torch.no_grad()
    def draw_figures(self, out_dir: str, models: dict, curves: dict, val_set,
                     device: torch.device) -> list[str]:
        """``depth_predictions.png``: input, ground truth, each upsampler's depth and error map
        on the first validation samples (the harness draws ``curves.png``)."""
        from ... import viz

        paths = []
        idx = list(range(min(FIGURE_SAMPLES, len(val_set))))
        if models and idx:
            items = [val_set[i] for i in idx]
            batch = {"image": torch.stack([it["image"] for it in items]).to(device),
                     "depth": torch.stack([it["depth"] for it in items]).to(device)}
            preds = {}
            for name, m in models.items():
                m.eval()
                preds[name] = list(self.predict(m, batch)[:, 0].float().cpu().numpy())
            max_depth = float(getattr(next(iter(models.values())), "max_depth", MAX_DEPTH_DEFAULT))
            fig = viz.plot_depth_predictions(
                [val_set.raw_image(i) for i in idx], [it["depth"][0].numpy() for it in items],
                preds, max_depth=max_depth,
                title="validation depth (first seed of each upsampler) and |error|")
            paths.append(viz.save_figure(fig, os.path.join(out_dir, "depth_predictions.png")))
        return paths
