"""Per-step cost of ``sapa compare --task segmentation`` at its default size, to budget the
default run (docs/compare.md, "The presets").

For each upsampler: process CPU time and wall time of one training step (SegNet
``16,32,64,128`` at 64x64, batch 8, AdamW, cross-entropy) over ``--steps`` steps after 3
warm-up steps, and the CPU time of generating one sample of the default data set. CPU time is
reported because on a shared machine it is less affected by the load than wall time (with one
thread and an idle core the two agree).

    python benchmarks/compare_steps.py --threads 1 bilinear carafe sapa-b sapa-g
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

from sapa.models import SegNet
from sapa.tasks.segmentation import SyntheticSegmentation

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

BATCH, SIZE, WIDTHS, CLASSES, SAMPLES = 8, 64, (16, 32, 64, 128), 7, 64


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("upsamplers", nargs="+")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--samples", type=int, default=SAMPLES, help="generated samples (>= 8)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(harness.machine_info())
    tic = time.process_time()
    n = args.samples
    data = SyntheticSegmentation("train", n, SIZE, seed=0)
    xs = torch.stack([data[i][0] for i in range(n)])
    ys = torch.stack([data[i][1] for i in range(n)])
    print(f"data: {(time.process_time() - tic) / n * 1e3:.1f} ms CPU per sample")
    rows = []
    for up in args.upsamplers:
        torch.manual_seed(0)
        model = SegNet(CLASSES, up, widths=WIDTHS)
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3)

        def step(i):
            j = (BATCH * i) % (n - n % BATCH)
            loss = F.cross_entropy(model(xs[j:j + BATCH]), ys[j:j + BATCH], ignore_index=255)
            opt.zero_grad()
            loss.backward()
            opt.step()

        for i in range(3):
            step(i)
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(args.steps):
            step(i)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        rows.append([up, f"{cpu / args.steps * 1e3:.0f}", f"{wall / args.steps * 1e3:.0f}"])
    print(harness.markdown_table(["upsampler", "ms CPU / step", "ms wall / step"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
