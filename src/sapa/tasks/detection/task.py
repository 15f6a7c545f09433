"""``sapa compare --task detection``: Faster R-CNN (ResNet-FPN) with the FPN's upsampling
swapped, COCO box AP (the paper's Table 3)."""
from __future__ import annotations

import argparse
import os

import torch
import torch.nn as nn

from ...errors import UsageError
from ..base import Column, Task
from . import coco, synthetic
from .evaluation import CocoMeter

# The detector sized for a CPU (the default) or torchvision's own settings.
DETECTORS = {
    "small": {"representation_size": 256,
              "rpn_pre_nms_top_n_train": 600, "rpn_post_nms_top_n_train": 300,
              "rpn_pre_nms_top_n_test": 300, "rpn_post_nms_top_n_test": 150,
              "rpn_batch_size_per_image": 128, "box_batch_size_per_image": 64},
    "torchvision": {"representation_size": 1024},  # FasterRCNN's defaults for the rest
}
DEFAULTS = {"backbone": "resnet18", "channels": 64, "detector": "small"}
# --image-size for --data (COCO): torchvision's and the paper's shorter side
COCO_IMAGE_SIZE = 800
FIGURE_IMAGES = 4


class DetectionTask(Task):
    """Object detection: torchvision's Faster R-CNN (ResNet-FPN) whose FPN top-down upsampling
    is the upsampler under test (guided by the finer lateral), trained with torchvision's
    losses; COCO box AP, AP50, AP75, AP_S/M/L with pycocotools. --data: 'synthetic' (a
    generated COCO-format set, the default) or a folder in the COCO 2017 layout, for which
    --image-size defaults to 800 and every image is used unless --num-train / --num-val say
    otherwise. Details: docs/detection.md.
    """

    name = "detection"
    primary = "ap"
    lower_is_better = False
    columns = (
        Column("ap", "AP", 100.0, 1),
        Column("ap50", "AP50", 100.0, 1),
        Column("ap75", "AP75", 100.0, 1),
        Column("aps", "AP_S", 100.0, 1),
        Column("apm", "AP_M", 100.0, 1),
        Column("apl", "AP_L", 100.0, 1),
    )
    table_note = ("COCO box AP (pycocotools COCOeval, iouType bbox, default parameters: up to 100 "
                  "detections per image) on the validation split: AP over IoU .50:.05:.95, AP50, "
                  "AP75, and AP of small (area < 32² px), medium and large (> 96² px) objects, "
                  "areas in pixels of the original images; a scale without ground truth has no "
                  "AP and is left out.")
    default_upsamplers = ("nearest", "carafe", "sapa-b", "sapa-g")
    quick_upsamplers = ("nearest", "sapa-b")
    # sized so that --quick takes ~2 min and the default run ~28 min on an idle 2-core CPU
    # (one thread: ~0.5 s per training step, ~0.05 s per validation image; docs/detection.md)
    presets = {
        #                    default   --quick
        "seeds": ([0, 1, 2], [0]),
        "iters": (240, 80),
        "batch_size": (4, 4),
        "eval_batch_size": (8, 8),
        "image_size": (160, 160),
        "num_train": (1024, 256),
        "num_val": (128, 48),
        "eval_every": (120, 40),
        "ckpt_every": (60, 40),
        "lr": (1e-3, 1e-3),
        "weight_decay": (1e-4, 1e-4),
    }

    # ---- command line and configuration ------------------------------------------------------

    def add_arguments(self, group: argparse._ArgumentGroup) -> None:
        from ...models.faster_rcnn import BACKBONES

        group.add_argument("--backbone", choices=BACKBONES, default=None,
                           help=f"the ResNet of the Faster R-CNN backbone (default: "
                                f"{DEFAULTS['backbone']}; the paper's is resnet50)")
        group.add_argument("--backbone-weights", metavar="FILE", default=None,
                           help="a local torchvision ResNet state dict to start the backbone from "
                                "(default: random weights); its BatchNorms are then frozen and "
                                "its stem and first stage are not trained, as torchvision does")
        group.add_argument("--channels", type=int, default=None,
                           help=f"FPN width (default: {DEFAULTS['channels']}; torchvision and the "
                                "paper: 256)")
        group.add_argument("--detector", choices=tuple(DETECTORS), default=None,
                           help="'small' (default) samples fewer proposals, anchors and RoIs and "
                                "has a 256-wide box head, to train on a CPU; 'torchvision' keeps "
                                "torchvision's Faster R-CNN settings (2000 proposals, 512 RoIs, "
                                "1024-wide box head)")

    def resolve(self, args: argparse.Namespace, settings: dict) -> dict:
        from ...errors import check_installed
        from ...models.faster_rcnn import BACKBONES

        def opt(key):
            val = getattr(args, key, None)
            return DEFAULTS[key] if val is None else val

        backbone, channels, detector = opt("backbone"), opt("channels"), opt("detector")
        if backbone not in BACKBONES:
            raise UsageError(f"--backbone must be one of {list(BACKBONES)}, got {backbone!r}")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise UsageError(f"--channels must be a positive int, got {channels!r}")
        if detector not in DETECTORS:
            raise UsageError(f"--detector must be one of {list(DETECTORS)}, got {detector!r}")
        weights = getattr(args, "backbone_weights", None)
        if weights is not None:
            if not os.path.isfile(weights):
                raise UsageError(f"--backbone-weights: no such file {weights}")
            weights = os.path.abspath(weights)
        data = settings.get("data") or "synthetic"
        size = settings["image_size"]
        num_train, num_val = settings["num_train"], settings["num_val"]
        if data != "synthetic":
            if not os.path.isdir(data):
                raise UsageError(f"--data must be 'synthetic' or a folder in the COCO 2017 layout, "
                                 f"got {data!r}")
            for split in ("train", "val"):
                ann = coco.annotation_file(data, split)
                if not os.path.isfile(ann):
                    raise UsageError(f"--data {data}: the COCO 2017 layout needs {ann}")
            data = os.path.abspath(data)
            if getattr(args, "image_size", None) is None:
                size = COCO_IMAGE_SIZE
            # a real set: every image unless asked otherwise
            num_train, num_val = getattr(args, "num_train", None), getattr(args, "num_val", None)
        if isinstance(size, bool) or not isinstance(size, int) or size < 64:
            raise UsageError(f"--image-size must be an int >= 64 for detection, got {size!r}")
        for key, n in (("num_train", num_train), ("num_val", num_val)):
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
                raise UsageError(f"--{key.replace('_', '-')} must be a positive int, got {n!r}")
        check_installed("torchvision", "pycocotools", needed_for="--task detection",
                        extra="detection")
        if data == "synthetic":
            check_installed("skimage", "sklearn", needed_for="the generated detection set",
                            extra="experiments")
        return {"data": data, "image_size": size, "num_train": num_train, "num_val": num_val,
                "backbone": backbone, "backbone_weights": weights, "channels": channels,
                "detector": detector}

    # ---- data --------------------------------------------------------------------------------

    def build_datasets(self, config: dict):
        if config["data"] == "synthetic":
            sets = []
            for split, key in (("train", "num_train"), ("val", "num_val")):
                n, size, seed = config[key], config["image_size"], config["data_seed"]
                ann, pixels = synthetic.generate(split, n, size, seed)
                source = f"generated {split} set ({n} images, {size} px, seed {seed})"
                sets.append(coco.in_memory(ann, pixels, source, split))
            return sets[0], sets[1]
        return (coco.coco_folder(config["data"], "train", config["num_train"]),
                coco.coco_folder(config["data"], "val", config["num_val"]))

    def collate(self):
        return coco.collate

    # ---- model, loss, inference ----------------------------------------------------------------

    def build_model(self, config: dict, upsampler: str, train_set) -> nn.Module:
        from ...models.faster_rcnn import build_faster_rcnn

        return build_faster_rcnn(train_set.num_classes, upsampler, backbone=config["backbone"],
                                 fpn_channels=config["channels"], image_size=config["image_size"],
                                 backbone_weights=config["backbone_weights"],
                                 **DETECTORS[config["detector"]])

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        images, targets = batch
        losses = model(images, targets)
        return sum(losses.values())

    def predict(self, model: nn.Module, batch):
        images, _ = batch
        return [{k: v.detach().cpu() for k, v in out.items()} for out in model(images)]

    def make_meter(self, config: dict, val_set) -> CocoMeter:
        return CocoMeter(val_set.index.gt, val_set.index.label_to_category)

    def example_input(self, config: dict, device: torch.device):
        size = config["image_size"]
        return [torch.zeros(3, size, size, device=device)]

    # ---- figures -------------------------------------------------------------------------------

    def draw_figures(self, out_dir: str, models: dict, curves: dict, val_set,
                     device: torch.device) -> list[str]:
        from ... import viz

        paths = []
        if models:
            idx = list(range(min(FIGURE_IMAGES, len(val_set))))
            images, targets, preds = [], [], {name: [] for name in models}
            for i in idx:
                image, target = val_set[i]
                images.append(val_set.raw_image(i))
                targets.append(target)
                for name, model in models.items():
                    model.eval()
                    with torch.no_grad():
                        preds[name].append(self.predict(model, ([image.to(device)], [target]))[0])
            # each model's highest-scored boxes, as many as the image has objects: comparable
            # across models whatever their score calibration (short runs score low)
            fig = viz.plot_detections(
                images, targets, preds, val_set.class_names, score_threshold=0.0,
                top_k=[len(t["boxes"]) for t in targets],
                title="validation images: ground truth, and each model's top-scored boxes "
                      "(as many as objects; score on the box)")
            paths.append(viz.save_figure(fig, os.path.join(out_dir, "detections.png")))
        return paths
