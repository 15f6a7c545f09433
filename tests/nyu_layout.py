"""Write a tiny NYU Depth V2 tree in BTS's layout (``sapa.tasks.depth.nyu``) for the tests.

Frames are 4:3 like NYU's (smaller, to stay fast); the depth is a tilted plane between 1 and
5 m with a hole of zeros, stored as 16-bit millimetres; the image is a shaded function of the
depth plus noise, so a network can learn something from it.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

FOCAL = "518.8579"


def _frame(rng, size):
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    a, b = rng.uniform(-1, 1, size=2)
    depth = 3 + a * (yy - 0.5) * 2 + b * (xx - 0.5) * 2  # 1..5 m
    depth[h // 3 : h // 3 + 4, w // 2 : w // 2 + 5] = 0  # a hole
    shade = np.clip(1 - depth / 6, 0, 1)
    rgb = np.stack([shade, shade * 0.8, 1 - shade], -1) + rng.normal(0, 0.03, size=(h, w, 3))
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8), (depth * 1000).round().astype(np.uint16)


def write_nyu_layout(root: str, num_train: int = 4, num_test: int = 3, size=(120, 160),
                     seed: int = 0, lists_dir: str = "") -> str:
    """Write ``num_train`` training and ``num_test`` test frames of ``size = (H, W)`` under
    ``root`` with both file lists (in ``root/lists_dir``); returns ``root``."""
    rng = np.random.default_rng(seed)
    lines = {"train": [], "test": []}
    for split, n, folder, lead in (("train", num_train, "sync", "/"),
                                   ("test", num_test, os.path.join("official_splits", "test"), "")):
        for i in range(n):
            scene = f"{'kitchen' if i % 2 else 'bathroom'}_{i // 2:04d}"
            os.makedirs(os.path.join(root, folder, scene), exist_ok=True)
            rgb, depth = _frame(rng, size)
            rgb_rel, depth_rel = f"{scene}/rgb_{i:05d}.jpg", f"{scene}/sync_depth_{i:05d}.png"
            Image.fromarray(rgb).save(os.path.join(root, folder, rgb_rel), quality=95)
            Image.fromarray(depth).save(os.path.join(root, folder, depth_rel))
            lines[split].append(f"{lead}{rgb_rel} {lead}{depth_rel} {FOCAL}")
    os.makedirs(os.path.join(root, lists_dir), exist_ok=True)
    for split, name in (("train", "nyudepthv2_train_files_with_gt.txt"),
                        ("test", "nyudepthv2_test_files_with_gt.txt")):
        with open(os.path.join(root, lists_dir, name), "w") as f:
            f.write("\n".join(lines[split]) + "\n")
    return root
