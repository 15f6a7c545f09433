"""What an upsampler costs inside a whole model: one SegFormer training step per upsampler.

A step is forward, cross-entropy on the logits resized to the labels, backward and an AdamW
update, on fixed random images and labels (batch ``--batch``, ``--image-size`` square), the
model in train mode. For every upsampler (default: bilinear, carafe, sapa-b, sapa-g) it
prints, from one run:

- CPU time of a step: the models are built in this process and stepped round-robin
  (``harness.time_interleaved``: a burst of load from other processes hits all alike), the
  minimum over ``--repeats`` steps after ``--warmup``; the ratio is to bilinear's. ``--clock
  cpu`` measures the process's CPU time instead of wall time: with ``--threads 1`` that is
  what a step costs however loaded the machine is (with more threads it sums them);
- CPU peak extra resident memory of one step, each upsampler in a fresh process
  (``harness.peak_extra_memory``: ``VmHWM`` after resetting it, minus ``VmRSS`` before the
  step; the model, its gradients and the optimiser's state exist before, from the warm-up
  step), and its ratio to bilinear's;
- on CUDA, when present (``--cuda-batch``, ``--cuda-image-size``): step time with CUDA
  events (minimum over the repeats) and ``torch.cuda.max_memory_allocated`` during one step
  minus what was allocated before it.

Goal (issue 14): on the CPU, SAPA-B within 1.15x bilinear's step time and peak memory.

    python benchmarks/model_step.py                      # SegFormer-B1, CPU batch 2 at 256x256
    python benchmarks/model_step.py --threads 1
    python benchmarks/model_step.py --profile sapa-b     # torch.profiler table of one step
    python benchmarks/model_step.py --breakdown sapa-b   # the head's upsampling and its parts
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

DEFAULT_UPSAMPLERS = ("bilinear", "carafe", "sapa-b", "sapa-g")
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
GOALS = {"sapa-b": {"time": 1.15, "memory": 1.15}}


def make_step(upsampler: str, size: str = "b1", batch: int = 2, image_size: int = 256,
              num_classes: int = 150, device: str = "cpu", seed: int = 0):
    """One training step of SegFormer-``size`` with ``upsampler`` on fixed random data, as a
    no-argument callable. Module level, so ``harness.peak_extra_memory`` can build it in a
    fresh process."""
    from sapa.models import SegFormer

    torch.manual_seed(seed)
    model = SegFormer(num_classes, upsampler, size).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=6e-5, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 3, image_size, image_size, generator=gen).to(device)
    label = torch.randint(0, num_classes, (batch, image_size, image_size), generator=gen).to(device)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(image), label, ignore_index=255)
        loss.backward()
        opt.step()

    step.model = model
    return step


def cuda_step_stats(upsampler: str, args) -> dict:
    """Step time (CUDA events, min over the repeats) and peak extra allocated memory."""
    step = make_step(upsampler, args.size, args.cuda_batch, args.cuda_image_size,
                     args.num_classes, "cuda")
    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(args.repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    del step
    torch.cuda.empty_cache()
    return {"time": min(times), "memory": peak}


def _table(names, stats, unit_note) -> str:
    base = stats["bilinear"]
    rows = []
    for name in names:
        s = stats[name]
        rows.append([name, f"{s['time'] * 1e3:.1f}", f"{s['time'] / base['time']:.3f}x",
                     "—" if s.get("memory") is None else f"{s['memory'] / 2**20:.1f}",
                     "—" if s.get("memory") is None else f"{s['memory'] / base['memory']:.3f}x",
                     f"{s['params']:,}"])
    return harness.markdown_table(
        ["upsampler", "step ms (min)", "time / bilinear", f"peak extra MiB{unit_note}",
         "memory / bilinear", "params"], rows)


def _goals(stats) -> list[str]:
    out = []
    for name, goal in GOALS.items():
        if name not in stats:
            continue
        for key, limit in goal.items():
            if stats[name].get(key) is None:
                continue
            ratio = stats[name][key] / stats["bilinear"][key]
            out.append(f"goal {name} {key} / bilinear = {ratio:.3f}x (<= {limit}x): "
                       f"{'met' if ratio <= limit else 'NOT met'}")
    return out


def breakdown(upsampler: str, args) -> list[list]:
    """CPU time (this process, min of ``--repeats``) of forward + backward of the head's
    upsampling with ``upsampler`` (a SAPA variant) against bilinear's resizes, and of its
    parts: the normalised query / key projections and ``sapa_attention``, on the stage shapes
    of SegFormer-``size`` at ``--batch`` x ``--image-size``."""
    from sapa import sapa_attention
    from sapa.models import MIT_SIZES, SegFormerHead
    from sapa.models.segformer import GUIDED_STAGES
    from sapa.modules.norms import project_normalized

    c, b = MIT_SIZES[args.size].decoder_dim, args.batch
    sides = [args.image_size // s for s in (4, 8, 16, 32)]
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(b, c, s, s, generator=gen).requires_grad_() for s in sides]
    # what each of the six stages gets: x at the size the earlier stages left, the guide's size
    xs, gs = [], []
    for i, g in GUIDED_STAGES:
        side = sides[g] // 2
        xs.append(torch.randn(b, c, side, side, generator=gen).requires_grad_())
        gs.append(torch.randn(b, c, sides[g], sides[g], generator=gen).requires_grad_())

    def clock(fn):
        return harness.time_min(fn, warmup=1, repeats=args.repeats, clock=time.process_time).best

    def upsampling(head):
        def step():
            out = head.upsample(feats)
            sum(o.sum() for o in out[1:]).backward()
        return step

    head = SegFormerHead((c,) * 4, c, args.num_classes, upsampler)
    ups = head.upsamplers

    def projections():
        total = 0
        for m, x, g in zip(ups, xs, gs):
            total = total + project_normalized(g, m.norm_guide, [m.q])[0].sum()
            total = total + project_normalized(x, m.norm_x, [m.k])[0].sum()
        total.backward()

    with torch.no_grad():
        qk = [m.query_key(x, g) for m, x, g in zip(ups, xs, gs)]
    qk = [(q.contiguous().requires_grad_(), k.contiguous().requires_grad_()) for q, k in qk]

    def attention(backward=True):
        def step():
            with torch.set_grad_enabled(backward):
                total = sum(sapa_attention(q, k, x, m.kernel_size).sum()
                            for (q, k), x, m in zip(qk, xs, ups))
            if backward:
                total.backward()
        return step

    bil = clock(upsampling(SegFormerHead((c,) * 4, c, args.num_classes, "bilinear")))
    rows = [["bilinear: the three resizes", bil],
            [f"{upsampler}: the six stages", clock(upsampling(head))],
            ["- normalised q / k projections", clock(projections)],
            ["- sapa_attention", clock(attention())],
            ["  (its forward alone)", clock(attention(False))]]
    return [[name, f"{t * 1e3:.1f}"] for name, t in rows]


def profile(upsampler: str, args) -> str:
    """``torch.profiler`` table of one CPU step (after warm-up), by self CPU time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    step = make_step(upsampler, args.size, args.batch, args.image_size, args.num_classes)
    for _ in range(max(args.warmup, 1)):
        step()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upsamplers", default=",".join(DEFAULT_UPSAMPLERS),
                   help="comma-separated; bilinear is always included (default: %(default)s)")
    p.add_argument("--size", default="b1", help="MiT size, b0..b5 (default: %(default)s)")
    p.add_argument("--batch", type=int, default=2, help="CPU batch (default: %(default)s)")
    p.add_argument("--image-size", type=int, default=256,
                   help="CPU image side, a multiple of 32 (default: %(default)s)")
    p.add_argument("--cuda-batch", type=int, default=8, help="CUDA batch (default: %(default)s)")
    p.add_argument("--cuda-image-size", type=int, default=512,
                   help="CUDA image side (default: %(default)s)")
    p.add_argument("--num-classes", type=int, default=150, help="(default: %(default)s, ADE20K)")
    p.add_argument("--repeats", type=int, default=5, help="timed steps (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice)")
    p.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                   help="CPU step time: wall clock, or this process's CPU time (default: %(default)s)")
    p.add_argument("--no-memory", action="store_true", help="skip the CPU memory column")
    p.add_argument("--no-cuda", action="store_true", help="skip CUDA even when present")
    p.add_argument("--profile", metavar="UPSAMPLER",
                   help="print a torch.profiler table of one CPU step of UPSAMPLER and exit")
    p.add_argument("--breakdown", metavar="SAPA",
                   help="print the CPU time of the head's upsampling with SAPA (a sapa-* "
                        "variant) and of its parts, against bilinear's, and exit")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.upsamplers.split(",") if n.strip()]
    args.names = ["bilinear", *[n for n in names if n != "bilinear"]]
    for key in ("batch", "cuda_batch", "repeats", "num_classes"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1")
    for key in ("image_size", "cuda_image_size"):
        if getattr(args, key) < 32 or getattr(args, key) % 32:
            p.error(f"--{key.replace('_', '-')} must be a positive multiple of 32")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(harness.machine_info(extra_modules=("numba", "triton", "transformers")))
    if args.breakdown:
        print(f"CPU time (this process, min of {args.repeats}), forward + backward, of the "
              f"upsampling in SegFormer-{args.size}'s head at batch {args.batch}, "
              f"{args.image_size}x{args.image_size}\n")
        print(harness.markdown_table(["part", "ms"], breakdown(args.breakdown, args)))
        return 0
    if args.profile:
        print(f"one CPU training step of SegFormer-{args.size} with {args.profile}, batch "
              f"{args.batch}, {args.image_size}x{args.image_size}")
        print(profile(args.profile, args))
        return 0

    print(f"\nCPU: SegFormer-{args.size}, {args.num_classes} classes, batch {args.batch}, "
          f"{args.image_size}x{args.image_size}, float32, AdamW; torch threads "
          f"{torch.get_num_threads()}; {args.clock} time, min of {args.repeats} steps after "
          f"{args.warmup}, round-robin in one process; memory: one step in a fresh process per "
          "upsampler\n")
    steps = {n: make_step(n, args.size, args.batch, args.image_size, args.num_classes)
             for n in args.names}
    times = harness.time_interleaved(steps, warmup=args.warmup, repeats=args.repeats,
                                     clock=CLOCKS[args.clock])
    stats = {n: {"time": times[n].best,
                 "params": sum(p.numel() for p in steps[n].model.parameters())} for n in args.names}
    del steps
    for n in args.names:
        stats[n]["memory"] = None if args.no_memory else harness.peak_extra_memory(
            f"{os.path.abspath(__file__)}:make_step",
            dict(upsampler=n, size=args.size, batch=args.batch, image_size=args.image_size,
                 num_classes=args.num_classes), threads=torch.get_num_threads())
    print(_table(args.names, stats, ""))
    print()
    for line in _goals(stats):
        print(line)

    if torch.cuda.is_available() and not args.no_cuda:
        print(f"\nCUDA ({torch.cuda.get_device_name()}): SegFormer-{args.size}, batch "
              f"{args.cuda_batch}, {args.cuda_image_size}x{args.cuda_image_size}, float32; "
              f"CUDA events, min of {args.repeats} steps after {args.warmup}; memory: "
              "max_memory_allocated during one step minus allocated before\n")
        cuda = {}
        for n in args.names:
            cuda[n] = cuda_step_stats(n, args)
            cuda[n]["params"] = stats[n]["params"]
        print(_table(args.names, cuda, " (allocated)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
