"""GPU benchmark of the SAPA operator: the Triton backend vs the reference, the lean backend and
bilinear ``F.interpolate``.

For every case (B, C, d, H x W -> 2H x 2W, K, dtype) it prints, from one run on one GPU:

- time of the forward and of forward + backward: CUDA events around each call, minimum (and
  median) over ``--repeats`` calls after ``--warmup`` calls, and the ratio to bilinear's;
- peak memory of one forward and one forward + backward: ``torch.cuda.max_memory_allocated``
  during the call minus what was allocated before it (the inputs and the output gradient,
  which every method is given alike), and the ratio to bilinear's;

then the goals of issue 3 at B=8, C=256, d=32, 128^2 -> 256^2, K=5, bfloat16, and a plot
(``--plot``) of time and memory against the output size. A method that runs out of memory is
reported as OOM.

    python benchmarks/gpu.py                      # the full grid
    python benchmarks/gpu.py --goal               # only the goal case
    python benchmarks/gpu.py --resources          # no GPU needed: see below
    python benchmarks/gpu.py --smoke              # tiny shapes on any device: tests the script

``--resources`` records every Triton launch of the protocol functions (forward and backward of
the three ops) for a set of shapes, compiles each kernel for ``--arch`` (default sm_90, the
H100) with the GPU tile sizes, and prints its registers per thread, spilled bytes (``STACK``)
and shared memory (``cuobjdump --dump-resource-usage`` on the cubin). It needs only triton's
bundled ptxas, so it tells on a CPU-only machine whether a change makes the kernels spill.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

from sapa.ops import sapa_attention  # noqa: E402

METHODS = ("bilinear", "triton", "lean", "reference")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
GOAL_CASE = dict(b=8, c=256, d=32, h=128, k=5, dtype="bf16")
GOALS = {"time": 3.0, "speedup": 10.0, "memory": 1.5}


# ---- one case --------------------------------------------------------------------------------

def make_inputs(b, c, d, h, dtype, device, seed=0):
    """``q, k, v, grad`` for ``h x h -> 2h x 2h``; scores of order one (``q`` scaled by
    ``1/sqrt(d)``) so that the softmax is neither flat nor one-hot."""
    g = torch.Generator(device=device).manual_seed(seed)
    ho = 2 * h
    q = torch.randn(b, d, ho, ho, generator=g, device=device) / d**0.5
    k = torch.randn(b, d, h, h, generator=g, device=device)
    v = torch.randn(b, c, h, h, generator=g, device=device)
    grad = torch.randn(b, c, ho, ho, generator=g, device=device)
    return [t.to(dtype) for t in (q, k, v, grad)]


def make_steps(method, q, k, v, grad, kernel_size):
    """``(forward, forward_backward)`` callables that each allocate what one call allocates."""
    if method == "bilinear":
        inputs = [v]
        def fn(v):
            return F.interpolate(v, size=q.shape[-2:], mode="bilinear", align_corners=False)
    else:
        inputs = [q, k, v]
        def fn(q, k, v):
            return sapa_attention(q, k, v, kernel_size, backend=method)
    leaves = [t.detach().requires_grad_() for t in inputs]

    def forward():
        with torch.no_grad():
            fn(*inputs)

    def forward_backward():
        fn(*leaves).backward(grad)
        for t in leaves:
            t.grad = None

    return forward, forward_backward


def cuda_time(step, warmup, repeats):
    """Milliseconds per call: (min, median) over ``repeats`` calls timed with CUDA events."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return min(samples), statistics.median(samples)


def cpu_time(step, warmup, repeats):
    """``--smoke`` on the CPU: wall milliseconds, same statistics."""
    t = harness.time_min(step, warmup=warmup, repeats=repeats)
    return t.best * 1e3, t.median * 1e3


def cuda_peak(step):
    """Bytes allocated at the peak of one call above what was allocated before it."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def run_case(case, methods, args, device):
    """One row per method: times (ms) and peaks (bytes) of forward and forward + backward."""
    q, k, v, grad = make_inputs(case["b"], case["c"], case["d"], case["h"],
                                DTYPES[case["dtype"]], device)
    rows = []
    for method in methods:
        row = dict(case, method=method)
        try:
            forward, forward_backward = make_steps(method, q, k, v, grad, case["k"])
            for name, step in (("fwd", forward), ("fwd_bwd", forward_backward)):
                if device.type == "cuda":
                    row[f"{name}_ms"], row[f"{name}_median_ms"] = cuda_time(
                        step, args.warmup, args.repeats)
                    row[f"{name}_peak"] = cuda_peak(step)
                else:
                    row[f"{name}_ms"], row[f"{name}_median_ms"] = cpu_time(
                        step, args.warmup, args.repeats)
                    row[f"{name}_peak"] = None
        except torch.cuda.OutOfMemoryError:
            row["oom"] = True
            torch.cuda.empty_cache()
        rows.append(row)
    return rows


# ---- report ----------------------------------------------------------------------------------

def _ratio(a, b):
    return None if a is None or b is None or not b else a / b


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def table(rows):
    """Markdown table; ratios are to bilinear in the same case."""
    base = {}
    for r in rows:
        if r["method"] == "bilinear" and not r.get("oom"):
            base[_case_key(r)] = r
    out = []
    for r in rows:
        bl = base.get(_case_key(r), {})
        size = f"{r['h']}->{2 * r['h']}"
        head = [size, r["c"], r["k"], r["dtype"], r["method"]]
        if r.get("oom"):
            out.append(head + ["OOM"] * 8)
            continue
        def mib(x):
            return None if x is None else x / 2**20
        out.append(head + [
            _fmt(r["fwd_ms"], ".3f"), _fmt(r["fwd_bwd_ms"], ".3f"),
            _fmt(_ratio(r["fwd_ms"], bl.get("fwd_ms")), ".2f"),
            _fmt(_ratio(r["fwd_bwd_ms"], bl.get("fwd_bwd_ms")), ".2f"),
            _fmt(mib(r["fwd_peak"]), ".1f"), _fmt(mib(r["fwd_bwd_peak"]), ".1f"),
            _fmt(_ratio(r["fwd_peak"], bl.get("fwd_peak")), ".2f"),
            _fmt(_ratio(r["fwd_bwd_peak"], bl.get("fwd_bwd_peak")), ".2f")])
    headers = ["H->H'", "C", "K", "dtype", "method", "fwd ms", "fwd+bwd ms", "fwd / bil",
               "fwd+bwd / bil", "fwd peak MiB", "fwd+bwd peak MiB", "fwd mem / bil",
               "fwd+bwd mem / bil"]
    return harness.markdown_table(headers, out)


def _case_key(r):
    return (r["b"], r["c"], r["d"], r["h"], r["k"], r["dtype"])


def goals(rows):
    """The goal lines of issue 3 for the goal case (if it was measured)."""
    by = {r["method"]: r for r in rows if all(r[k] == v for k, v in GOAL_CASE.items())}
    tri, bil, ref = by.get("triton"), by.get("bilinear"), by.get("reference")
    if not tri or not bil or tri.get("oom") or bil.get("oom"):
        return ["goal case not measured"]
    lines = []
    t = tri["fwd_bwd_ms"] / bil["fwd_bwd_ms"]
    lines.append(f"triton fwd+bwd / bilinear fwd+bwd = {t:.2f} (goal <= {GOALS['time']}): "
                 f"{'met' if t <= GOALS['time'] else 'NOT met'}")
    if ref and not ref.get("oom"):
        s = ref["fwd_bwd_ms"] / tri["fwd_bwd_ms"]
        lines.append(f"reference fwd+bwd / triton fwd+bwd = {s:.1f} (goal >= {GOALS['speedup']}): "
                     f"{'met' if s >= GOALS['speedup'] else 'NOT met'}")
    else:
        lines.append("reference: OOM or not run (speed-up goal met by default)")
    if tri["fwd_bwd_peak"] is not None:
        m = tri["fwd_bwd_peak"] / bil["fwd_bwd_peak"]
        lines.append(f"triton fwd+bwd peak / bilinear = {m:.2f} (goal <= {GOALS['memory']}): "
                     f"{'met' if m <= GOALS['memory'] else 'NOT met'}")
    return lines


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    # the goal case's K and dtype where measured, else the first case's
    goal = [r for r in rows if r["k"] == GOAL_CASE["k"] and r["dtype"] == GOAL_CASE["dtype"]]
    k, dtype = (goal or rows)[0]["k"], (goal or rows)[0]["dtype"]
    for method, c in itertools.product(METHODS, sorted({r["c"] for r in rows})):
        pts = sorted((r["h"], r) for r in rows if r["method"] == method and r["c"] == c
                     and r["k"] == k and r["dtype"] == dtype and not r.get("oom"))
        if not pts:
            continue
        x = [(2 * h) ** 2 for h, _ in pts]
        style = dict(marker="o", linestyle="-" if c == max(r["c"] for r in rows) else "--",
                     label=f"{method} C={c}")
        axes[0].plot(x, [r["fwd_bwd_ms"] for _, r in pts], **style)
        if pts[0][1]["fwd_bwd_peak"] is not None:
            axes[1].plot(x, [r["fwd_bwd_peak"] / 2**20 for _, r in pts], **style)
    for ax, label in zip(axes, ("forward + backward time (ms)", "forward + backward peak (MiB)")):
        ax.set(xscale="log", yscale="log", xlabel="output points H' x W'", ylabel=label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"SAPA on {torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}"
                 f", K={k}, {dtype}, B={rows[0]['b']}, d={rows[0]['d']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot written to {path}")


# ---- --resources: registers and spills of every launch, without a GPU -------------------------

class _Recorder:
    """Stands in for a ``@triton.jit`` kernel: ``kernel[grid](*args, **kw)`` is recorded."""

    def __init__(self, fn, log):
        self.fn, self.log = fn, log

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.log.append((self.fn, grid, args, kwargs))


def record_launches(call):
    """The launches ``call()`` makes with the GPU tile sizes (tensors may live on ``meta``)."""
    from sapa.ops.backends import triton as tb

    compiled, log = tb.kernels(False), []
    fake = types.SimpleNamespace(**{
        name: types.SimpleNamespace(**{
            fn_name: _Recorder(getattr(getattr(compiled, name), fn_name), log)
            for fn_name in dir(getattr(compiled, name))
            if type(getattr(getattr(compiled, name), fn_name)).__name__ == "JITFunction"})
        for name in ("attention", "similarity", "assemble")})
    saved = tb.kernels, tb._interpreted
    tb.kernels, tb._interpreted = (lambda interpret: fake), (lambda t: False)
    try:
        call()
    finally:
        tb.kernels, tb._interpreted = saved
    return log


_PTR = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16",
        torch.float64: "*fp64"}


def compile_launch(fn, args, kwargs, arch):
    """Compile one recorded launch for ``sm_<arch>``; ints equal to 1 are specialised, as the
    JIT does. Returns (registers, spill bytes, shared bytes)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kwargs = dict(kwargs)
    options = {"num_warps": kwargs.pop("num_warps", 4)}
    names = [n for n in fn.arg_names if n not in kwargs]
    signature, constexprs = {}, dict(kwargs)
    for name, value in zip(names, args):
        if isinstance(value, torch.Tensor):
            signature[name] = _PTR[value.dtype]
        elif value == 1:
            signature[name], constexprs[name] = "constexpr", 1
        else:
            signature[name] = "i32" if -2**31 <= value < 2**31 else "i64"
    for name in kwargs:
        signature[name] = "constexpr"
    kernel = triton.compile(ASTSource(fn, signature, constexprs=constexprs),
                            target=GPUTarget("cuda", arch, 32), options=options)
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                             "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        usage = subprocess.run([cuobjdump, "--dump-resource-usage", f.name],
                               capture_output=True, text=True, check=True).stdout
    fields = dict(item.split(":") for line in usage.splitlines() if "REG:" in line
                  for item in line.split() if ":" in item and item.split(":")[1].isdigit())
    return int(fields["REG"]), int(fields["STACK"]), kernel.metadata.shared


def resources(args):
    from sapa.ops.backends import triton as tb

    print(harness.machine_info())
    print(f"Triton kernels compiled for sm_{args.arch} with the GPU tiles: BLOCK_P={tb.BLOCK_P}, "
          f"MAX_BLOCK_D={tb.MAX_BLOCK_D}, MAX_BLOCK_C={tb.MAX_BLOCK_C}, "
          f"GATHER_LANES={tb.GATHER_LANES}, GATHER_BLOCK={tb.GATHER_BLOCK}, "
          f"num_warps={tb.NUM_WARPS}; d={args.embed}, C={max(args.channels)}, B=1; "
          "REG = registers per thread, STACK = spilled bytes per thread")
    seen, rows, spills = set(), [], 0
    normalizers = ("softmax", "relu", "sigmoid", "softplus", "none")
    cases = itertools.product(args.kernels, args.scales, args.dtypes, normalizers,
                              ("zeros", "valid"))
    for k, scale, dtype, normalizer, border in cases:
        dt = DTYPES[dtype]
        h, c, d = 16, max(args.channels), args.embed
        ho = scale * h
        def empty(*shape):
            return torch.empty(shape, device="meta", dtype=dt)
        q, kk, v, g = empty(1, d, ho, ho), empty(1, d, h, h), empty(1, c, h, h), empty(1, c, ho, ho)
        kern, gs = empty(1, k * k, ho, ho), empty(1, k * k, ho, ho)

        def calls():
            out, stat = tb.attention_fwd(q, kk, v, k, normalizer, border)
            tb.attention_bwd(g, q, kk, v, out, stat, k, normalizer, border)
            tb.similarity_fwd(q, kk, k, border)
            tb.similarity_bwd(gs, q, kk, k, border)
            tb.assemble_fwd(kern, v, k, border)
            tb.assemble_bwd(g, kern, v, k, border)

        for fn, grid, largs, lkwargs in record_launches(calls):
            key = (fn.__name__, tuple(sorted((n, str(x)) for n, x in lkwargs.items())),
                   tuple(str(a.dtype) if isinstance(a, torch.Tensor) else a == 1 for a in largs))
            if key in seen:
                continue
            seen.add(key)
            regs, stack, shared = compile_launch(fn, largs, lkwargs, args.arch)
            spills += stack > 0
            consts = ", ".join(f"{n}={x}" for n, x in lkwargs.items()
                               if n in ("K", "NORM", "VALID", "BLOCK_P", "BLOCK_L", "NC",
                                        "BLOCK_D", "BLOCK_C", "num_warps"))
            rows.append([fn.__name__, dtype, f"x{scale}", consts, regs, stack, shared])
            print(" | ".join(map(str, rows[-1])), flush=True)
    print(harness.markdown_table(["kernel", "dtype", "scale", "constexprs", "REG", "STACK",
                                  "shared B"], rows))
    print(f"{len(rows)} distinct launches compiled; {spills} of them spill registers to local "
          "memory (STACK > 0)")
    return 1 if spills else 0


# ---- main ------------------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--embed", type=int, default=32, help="d")
    p.add_argument("--channels", type=int, nargs="+", default=[64, 256])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256],
                   help="low-resolution H (= W); the output is 2H x 2W")
    p.add_argument("--kernels", type=int, nargs="+", default=[3, 5, 7])
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--goal", action="store_true", help="only the goal case of issue 3")
    p.add_argument("--plot", help="where to write the plot (default docs/gpu_benchmark.png; "
                   "none with --smoke)")
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--resources", action="store_true",
                   help="compile every kernel for --arch and print registers / spills (no GPU)")
    p.add_argument("--arch", type=int, default=90, help="compute capability for --resources")
    p.add_argument("--scales", type=int, nargs="+", default=[2, 4],
                   help="upsampling factors for --resources")
    p.add_argument("--smoke", action="store_true",
                   help="tiny shapes on any device (CPU: Triton interpreted): tests the script")
    args = p.parse_args(argv)

    if args.resources:
        return resources(args)
    if args.smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")
        args.batch, args.embed, args.channels, args.sizes = 1, 4, [6], [3]
        args.kernels, args.dtypes, args.warmup, args.repeats = [3], ["fp32"], 1, 2
    elif not torch.cuda.is_available():
        print("no CUDA GPU: nothing to measure (see --resources and --smoke)")
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    if args.goal:
        cases = [dict(GOAL_CASE, b=args.batch)]
    else:
        cases = [dict(b=args.batch, c=c, d=args.embed, h=h, k=k, dtype=dt)
                 for dt, c, k, h in itertools.product(args.dtypes, args.channels, args.kernels,
                                                      args.sizes)]
    print(harness.machine_info())
    if device.type == "cuda":
        print(f"device {torch.cuda.get_device_name()}, CUDA {torch.version.cuda}")
    print(f"softmax, border zeros; methods {args.methods}; times: min (median) of {args.repeats} "
          f"calls after {args.warmup}; peaks: max_memory_allocated during one call minus before")

    rows = []
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm comes with the experiments extra
        def tqdm(x, **kw):
            return x
    t0 = time.time()
    for case in tqdm(cases, desc="cases"):
        rows += run_case(case, args.methods, args, device)
    print(table(rows))
    print(f"({time.time() - t0:.0f} s)")
    for line in goals(rows):
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    path = args.plot or (None if args.smoke else "docs/gpu_benchmark.png")
    if path:
        plot(rows, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
