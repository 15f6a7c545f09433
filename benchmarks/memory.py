"""Peak extra memory of one SAPA forward + backward on the CPU, per backend, against bilinear.

Every method runs in a fresh process (``harness.peak_extra_memory``): the inputs and the output
gradient are allocated and one warm-up step runs (JIT compilation, lazy initialisation), then
``VmHWM`` is reset (``5`` written to ``/proc/self/clear_refs``) and the measured step's peak
resident memory minus the resident memory just before it is reported. Each method is measured
``--repeats`` times (each a fresh process); the table shows the minimum and the range.

Methods: ``bilinear`` (``F.interpolate`` forward + backward on the same ``v``), ``reference``,
``lean`` and every other backend in ``sapa.list_backends()`` except ``triton`` (a GPU kernel).

    python benchmarks/memory.py            # the issue's case: B2 C256 d32 64x64 -> 128x128 K5
    python benchmarks/memory.py --batch 1 --channels 64 --size 32 --scale 2 --repeats 1

Goal (issue 2): the lean backend needs at most a third of the reference's peak extra memory;
the exit status is 1 when it does not.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

GOAL_LEAN_OVER_REFERENCE = 1 / 3
NOT_MEASURED_HERE = {"triton": "GPU kernels (the CPU runs them only in the slow interpreter)"}


def make_step(method: str, b: int, c: int, d: int, h: int, w: int, out_h: int, out_w: int,
              k: int, normalizer: str = "softmax", border: str = "zeros", seed: int = 0):
    """One forward + backward of ``method`` on fixed random float32 inputs (allocated here, so
    they are part of the baseline). Module level: ``harness.peak_extra_memory`` builds it in
    the child process."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(b, c, h, w, generator=gen).requires_grad_()
    grad = torch.randn(b, c, out_h, out_w, generator=gen)
    if method == "bilinear":
        inputs = (v,)

        def forward():
            return F.interpolate(v, size=(out_h, out_w), mode="bilinear", align_corners=False)
    else:
        from sapa.ops import sapa_attention

        q = torch.randn(b, d, out_h, out_w, generator=gen).requires_grad_()
        key = torch.randn(b, d, h, w, generator=gen).requires_grad_()
        inputs = (q, key, v)

        def forward():
            return sapa_attention(q, key, v, k, normalizer=normalizer, border=border,
                                  backend=method)

    def step():
        forward().backward(grad)
        for t in inputs:
            t.grad = None  # every step allocates its gradients, as a training step does

    return step


def sapa_methods() -> dict[str, str | None]:
    """``{backend: None if it can run float32 CPU tensors here, else why not}``: its
    ``can_run`` and then one tiny call (``can_run`` does not import the numba kernels, so a
    missing numba only shows at the first launch)."""
    from sapa.ops import list_backends, local_similarity
    from sapa.ops.backends import BackendUnavailable
    from sapa.ops.dispatch import load_backend

    probe = torch.zeros(1, 1, 2, 2)
    found = {}
    for name in list_backends():
        if name in NOT_MEASURED_HERE:
            continue
        found[name] = load_backend(name).can_run(probe, probe, probe)
        if found[name] is None:
            try:
                local_similarity(probe, probe, 3, backend=name)
            except BackendUnavailable as err:
                found[name] = str(err)
    return found


def measure(case: dict, methods, repeats: int = 1, threads: int | None = None) -> dict:
    """``{method: [peak extra bytes of each repeat]}``, each repeat a fresh process."""
    target = os.path.abspath(__file__) + ":make_step"
    return {m: [harness.peak_extra_memory(target, dict(method=m, **case), threads=threads)
                for _ in range(repeats)]
            for m in methods}


def _mib(x: float) -> str:
    return f"{x / 2**20:.1f}"


def report(results: dict, unavailable: dict) -> str:
    """The Markdown table: minimum and range over repeats, ratios to the reference and bilinear."""
    best = {m: min(v) for m, v in results.items()}
    rows = []
    for m, samples in results.items():
        spread = f"{_mib(min(samples))}-{_mib(max(samples))}" if len(samples) > 1 else "-"
        ratio_ref = f"{best[m] / best['reference']:.3f}" if best.get("reference") else "-"
        ratio_bil = f"{best[m] / best['bilinear']:.2f}" if best.get("bilinear") else "-"
        rows.append([m, _mib(best[m]), spread, ratio_ref, ratio_bil])
    for m, reason in unavailable.items():
        rows.append([m, f"not run: {reason}", "-", "-", "-"])
    return harness.markdown_table(
        ["method", "peak extra MiB (min)", "range MiB", "/ reference", "/ bilinear"], rows)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=2, help="B (default 2)")
    p.add_argument("--channels", type=int, default=256, help="C of v (default 256)")
    p.add_argument("--embed", type=int, default=32, help="d of q and k (default 32)")
    p.add_argument("--size", type=int, nargs="+", default=[64], metavar="H",
                   help="low-resolution H [W] (default 64 64)")
    p.add_argument("--scale", type=int, default=2, help="H' = scale * H (default 2)")
    p.add_argument("--out-size", type=int, nargs=2, default=None, metavar=("H'", "W'"),
                   help="output size, instead of --scale (e.g. 2H+1)")
    p.add_argument("--kernel-size", type=int, default=5, help="K (default 5)")
    p.add_argument("--normalizer", default="softmax")
    p.add_argument("--border", default="zeros")
    p.add_argument("--methods", nargs="+", default=None,
                   help="subset of bilinear and the backends (default: all that can run)")
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per method (default 3)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    if len(args.size) > 2:
        p.error("--size takes H or H W")
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    h, w = args.size[0], args.size[-1]
    out_h, out_w = args.out_size or (args.scale * h, args.scale * w)
    case = dict(b=args.batch, c=args.channels, d=args.embed, h=h, w=w, out_h=out_h, out_w=out_w,
                k=args.kernel_size, normalizer=args.normalizer, border=args.border)

    backends = sapa_methods()
    unavailable = {m: r for m, r in backends.items() if r is not None}
    methods = ["bilinear"] + [m for m, r in backends.items() if r is None]
    if args.methods:
        unknown = set(args.methods) - set(methods) - set(unavailable)
        if unknown:
            raise SystemExit(f"--methods: unknown {sorted(unknown)}; choose from {methods}")
        methods = [m for m in methods if m in args.methods]
        unavailable = {m: r for m, r in unavailable.items() if m in args.methods}

    if args.threads:
        torch.set_num_threads(args.threads)
    print(harness.machine_info())
    print(f"float32 forward + backward: B={args.batch}, C={args.channels}, d={args.embed}, "
          f"{h}x{w} -> {out_h}x{out_w}, K={args.kernel_size}, normalizer={args.normalizer}, "
          f"border={args.border}; torch threads {torch.get_num_threads()}")
    print(f"peak extra resident memory (VmHWM - VmRSS before the step) of one step in a fresh "
          f"process, after 1 warm-up step; min of {args.repeats} processes per method")
    print()
    results = measure(case, methods, args.repeats, args.threads)
    print(report(results, unavailable))

    if "lean" in results and "reference" in results:
        ratio = min(results["lean"]) / min(results["reference"])
        met = ratio <= GOAL_LEAN_OVER_REFERENCE
        print(f"\ngoal: lean / reference = {ratio:.3f} (<= {GOAL_LEAN_OVER_REFERENCE:.3f}): "
              f"{'met' if met else 'NOT met'}")
        return 0 if met else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
