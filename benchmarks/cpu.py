"""CPU benchmark of the SAPA operator: bilinear vs the reference, lean and cpu backends.

``cpu`` is the numba backend (``backend="cpu"`` is its alias).

For every case (B, C, d, H x W -> 2H x 2W, K, float32, all threads) it prints, from one run:

- time of the forward and of forward + backward: minimum over ``--repeats`` calls after
  warm-up. Each method runs in a fresh process, called round-robin with bilinear on the same
  tensors (so load from other processes hits both alike), and its ratio is to that bilinear
  time. Fresh processes, because whether a large output reuses freed heap memory or faults in
  new pages (a third of bilinear's forward here) depends on what ran before in the process;
- peak extra memory of one forward + backward, each method in a fresh process
  (``harness.peak_extra_memory``: ``VmHWM`` after resetting it), and its ratio to bilinear's;
- the ``cpu`` backend's first-call cost: loading its compiled kernels from numba's cache
  (measured here) and compiling them from scratch (a fresh process with an empty
  ``NUMBA_CACHE_DIR``); neither is in the steady-state times.

With ``--plot``, a sweep of ``cpu`` and bilinear over the number of output points and over
``K*K`` (how the cost grows), printed and plotted. The reference is skipped where its
``K*K x C x H' x W'`` windows would need more than ``--reference-limit-gb``.

    python benchmarks/cpu.py                       # the full grid (about 20 minutes)
    python benchmarks/cpu.py --sizes 64 --channels 256 --kernels 5     # the headline case
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

METHODS = ("bilinear", "reference", "lean", "cpu")
HEADLINE = dict(b=2, c=256, d=32, h=64, k=5)
GOALS = {"forward": 2.0, "forward+backward": 3.0, "memory": 1.5}


def reference_bytes(b, c, h, k) -> int:
    """Size of the reference's largest intermediate (windows of v at the output size)."""
    return 4 * b * c * k * k * (2 * h) ** 2


def make_step(method, b, c, d, h, k, backward=False, seed=0):
    """One call of ``method`` on fixed random inputs: the forward, or forward + backward.

    Module level, so ``harness.peak_extra_memory`` can build it in a fresh process.
    """
    from sapa.ops import sapa_attention

    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(b, c, h, h, generator=gen).requires_grad_(backward)
    if method == "bilinear":
        inputs = (v,)

        def forward():
            return F.interpolate(v, scale_factor=2, mode="bilinear", align_corners=False)
    else:
        q = torch.randn(b, d, 2 * h, 2 * h, generator=gen).requires_grad_(backward)
        kk = torch.randn(b, d, h, h, generator=gen).requires_grad_(backward)
        inputs = (q, kk, v)

        def forward():
            return sapa_attention(q, kk, v, k, backend=method)

    if not backward:
        def step():
            with torch.no_grad():
                forward()
        return step
    grad = torch.randn(b, c, 2 * h, 2 * h, generator=gen)

    def step():
        forward().backward(grad)
        for t in inputs:
            t.grad = None  # every call allocates its gradients, as a training step does
    return step


# ---- first call ------------------------------------------------------------------------------

_COLD_COMPILE = r"""
import time, torch
from sapa.ops import sapa_attention
q = torch.randn(1, 4, 8, 8, requires_grad=True)
k, v = torch.randn(1, 4, 4, 4, requires_grad=True), torch.randn(1, 4, 4, 4, requires_grad=True)
sapa_attention(q, k, v, 3, backend="lean").sum().backward()  # torch's one-time op setup
t0 = time.perf_counter()
out = sapa_attention(q, k, v, 3, backend="cpu")
t1 = time.perf_counter()
out.sum().backward()
t2 = time.perf_counter()
print(f"{t1 - t0:.3f} {t2 - t1:.3f}")
"""


def first_call_seconds(cold: bool) -> tuple[float, float]:
    """(forward, backward) seconds of the first float32 ``cpu`` call in a fresh process (after
    a ``lean`` call has paid torch's one-time custom-op setup); ``cold`` empties numba's cache
    first (a fresh ``NUMBA_CACHE_DIR``), else the shared cache is used."""
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as cache:
        if cold:
            env["NUMBA_CACHE_DIR"] = cache
        out = subprocess.run([sys.executable, "-c", _COLD_COMPILE], env=env, check=True,
                             capture_output=True, text=True).stdout
    fwd, bwd = map(float, out.split())
    return fwd, bwd


def compute_only(b, c, d, h, k, repeats=20):
    """Forward times without output allocation: ``cpu``'s kernel launched on a preallocated
    output and bilinear with ``out=``. Allocating a fresh 32 MiB output costs as much as a
    third of bilinear's forward here (page faults), so this ratio is the kernels' alone."""
    from sapa.ops.backends import numba

    cpu = numba._launcher()  # the launchers (numpy, numba)

    gen = torch.Generator().manual_seed(0)
    q = torch.randn(b, d, 2 * h, 2 * h, generator=gen)
    kk, v = torch.randn(b, d, h, h, generator=gen), torch.randn(b, c, h, h, generator=gen)
    out, stat = torch.empty(b, c, 2 * h, 2 * h), torch.empty(b, 2 * h, 2 * h)
    cpu._ready(torch.float32, "attention_fwd")
    row_start, rowidx, src, step, colin = cpu.geometry(h, h, 2 * h, 2 * h, k)
    block, ntasks = cpu._plan(b, h, 2 * h, 2 * h, k)
    args = (q.numpy(), kk.numpy(), v.numpy(), row_start, rowidx, src, step, k, block, colin,
            0, False, 1e-6, out.numpy(), stat.numpy())
    steps = {
        "bilinear": lambda: torch._C._nn.upsample_bilinear2d(v, (2 * h, 2 * h), False, None,
                                                             None, out=out),
        "cpu": lambda: cpu._launch("attention_fwd", ntasks, *args),
    }
    return harness.time_interleaved(steps, warmup=2, repeats=repeats)


# ---- measuring -------------------------------------------------------------------------------

def time_pair(case, method, repeats):
    """``{name: {"fwd": s, "fb": s}}`` for ``method`` and bilinear, timed round-robin in this
    process (forward first, then forward + backward)."""
    out = {}
    names = ["bilinear"] if method == "bilinear" else ["bilinear", method]
    for key, backward in (("fwd", False), ("fb", True)):
        steps = {m: make_step(m, **case, backward=backward) for m in names}
        for m, t in harness.time_interleaved(steps, warmup=1, repeats=repeats).items():
            out.setdefault(m, {})[key] = t.best
        del steps
    return out


def time_in_fresh_process(case, method, repeats, threads):
    """:func:`time_pair` in a fresh process: the allocator's state (whether a large output
    reuses freed heap or faults in fresh pages) then depends on no other method's history."""
    code = (f"import json, sys, torch; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); torch.set_num_threads({threads}); "
            f"import cpu as bench; print(json.dumps(bench.time_pair({case!r}, {method!r}, {repeats})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"timing {method} on {case} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_case(case, methods, repeats, memory, limit_gb):
    """``{method: {"fwd": s, "fb": s, "mem": bytes, "bil": {...}}}`` (``None`` where skipped).

    Each method is timed in its own fresh process next to bilinear (its ratios use that
    bilinear time); the reference and lean take at most 3 repeats (they are 100x slower).
    The bilinear row shows the bilinear times of the ``cpu`` process (or the first one).
    """
    runnable = [m for m in methods if not (
        m == "reference" and reference_bytes(case["b"], case["c"], case["h"], case["k"])
        > limit_gb * 2**30)]
    res = {m: {"fwd": None, "fb": None, "mem": None, "bil": None} for m in methods}
    threads = torch.get_num_threads()
    order = sorted((m for m in runnable if m != "bilinear"), key=lambda m: m != "cpu")
    for m in order or ["bilinear"]:
        n = repeats if m in ("cpu", "bilinear") else min(repeats, 3)
        times = time_in_fresh_process(case, m, n, threads)
        if m != "bilinear":
            res[m].update(times[m], bil=times["bilinear"])
        if "bilinear" in res and res["bilinear"]["fwd"] is None:
            res["bilinear"].update(times["bilinear"], bil=times["bilinear"])
    if memory:
        target = os.path.abspath(__file__) + ":make_step"
        for m in runnable:
            res[m]["mem"] = harness.peak_extra_memory(target, dict(method=m, **case,
                                                                   backward=True))
    return res


def _ms(t):
    return "-" if t is None else f"{t * 1e3:.1f}"


def _ratio(x, base):
    return "-" if x is None or not base else f"{x / base:.2f}x"


def _mb(x):
    return "-" if x is None else f"{x / 2**20:.0f}"


def table(results, methods) -> str:
    rows = []
    for case, res in results:
        bil_mem = res.get("bilinear", {}).get("mem")
        for m in methods:
            r = res[m]
            bil = r["bil"] or {}
            rows.append([
                f"{case['h']}²→{2 * case['h']}²", case["c"], case["k"], m,
                _ms(r["fwd"]), _ratio(r["fwd"], bil.get("fwd")),
                _ms(r["fb"]), _ratio(r["fb"], bil.get("fb")),
                _mb(r["mem"]), _ratio(r["mem"], bil_mem),
            ])
    headers = ["size", "C", "K", "method", "fwd ms", "fwd / bil", "fwd+bwd ms", "f+b / bil",
               "f+b peak MiB", "mem / bil"]
    return harness.markdown_table(headers, rows)


def scaling_sweep(b, c, d, repeats, threads, sizes, kernels, h_k=64, k_n=5):
    """Times of ``cpu`` and bilinear (forward and forward + backward) over the number of output
    points (``H`` in ``sizes``, ``K = k_n``) and over ``K*K`` (``H = h_k``), for the plot; each
    point in a fresh process (:func:`time_in_fresh_process`), as in the table."""
    rows = []
    grids = (("points", [(h, k_n) for h in sizes]), ("window", [(h_k, k) for k in kernels]))
    for axis, grid in grids:
        for h, k in grid:
            times = time_in_fresh_process(dict(b=b, c=c, d=d, h=h, k=k), "cpu", repeats, threads)
            rows.append(dict(axis=axis, h=h, k=k, points=b * 4 * h * h,
                             **{f"{m} {key}": t for m in times for key, t in times[m].items()}))
    return rows


def plot(rows, path, b, c):
    """Left: time against output points (log-log; a slope-1 line is linear growth). Right:
    ``cpu`` time against ``K*K`` with a least-squares line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax_n, ax_k) = plt.subplots(1, 2, figsize=(11, 4.2))
    pts = [r for r in rows if r["axis"] == "points"]
    k_n = pts[0]["k"]
    x = np.array([r["points"] for r in pts], dtype=float)
    for name, color in (("cpu", "tab:blue"), ("bilinear", "k")):
        for key, ls, label in (("fb", "-", "fwd+bwd"), ("fwd", "--", "fwd")):
            y = np.array([r[f"{name} {key}"] for r in pts])
            ax_n.plot(x, y * 1e3, ls, marker="o", color=color, label=f"{name} {label}")
    y0 = pts[-1]["cpu fb"] * 1e3
    ax_n.plot(x, y0 * x / x[-1], ":", color="gray", label="linear (slope 1)")
    ax_n.set(xscale="log", yscale="log", xlabel="output points B·H'·W'", ylabel="time (ms)",
             title=f"cost vs output points (B={b}, C={c}, K={k_n}, 2x)")
    ax_n.legend(fontsize=7)
    win = [r for r in rows if r["axis"] == "window"]
    kk = np.array([r["k"] ** 2 for r in win], dtype=float)
    for key, ls, label in (("fb", "-", "fwd+bwd"), ("fwd", "--", "fwd")):
        y = np.array([r[f"cpu {key}"] for r in win]) * 1e3
        slope, icpt = np.polyfit(kk, y, 1)
        ax_k.plot(kk, y, "o", color="tab:blue")
        ax_k.plot(kk, slope * kk + icpt, ls, color="tab:blue",
                  label=f"cpu {label}: {icpt:.1f} + {slope:.2f}·K² ms")
    ax_k.set(xlabel="K²", ylabel="time (ms)", ylim=(0, None),
             title=f"cpu cost vs window size ({win[0]['h']}²→{2 * win[0]['h']}², C={c})")
    ax_k.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def check_goals(results):
    """Lines comparing the headline case with the issue's goals."""
    for case, res in results:
        if all(case[key] == val for key, val in HEADLINE.items()):
            cpu = res["cpu"]
            bil = dict(cpu["bil"] or {}, mem=res.get("bilinear", {}).get("mem"))
            lines = []
            for name, key in (("forward", "fwd"), ("forward+backward", "fb"), ("memory", "mem")):
                if cpu[key] is None or bil.get(key) is None:
                    continue
                ratio = cpu[key] / bil[key]
                verdict = "met" if ratio <= GOALS[name] else "NOT met"
                lines.append(f"goal {name}: cpu / bilinear = {ratio:.2f}x "
                             f"(goal <= {GOALS[name]}x): {verdict}")
            return lines
    return []


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="32,64,128",
                   help="low-resolution sizes H (output 2H); default 32,64,128")
    p.add_argument("--channels", default="64,256", help="C values (default 64,256)")
    p.add_argument("--kernels", default="3,5,7", help="K values (default 3,5,7)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--embed", type=int, default=32, help="d (default 32)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="default: all (torch's default)")
    p.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory runs")
    p.add_argument("--no-compile-time", action="store_true",
                   help="skip the cold-cache compile measurement")
    p.add_argument("--reference-limit-gb", type=float, default=1.0)
    p.add_argument("--plot", default=None, help="save the scaling plot here (PNG)")
    p.add_argument("--scaling-sizes", default="16,24,32,48,64,96,128",
                   help="H of the sweep over output points (K = 5); default 16,...,128")
    p.add_argument("--scaling-kernels", default="1,3,5,7,9",
                   help="K of the sweep over the window (H = 64, or the largest of "
                        "--scaling-sizes if smaller); default 1,3,5,7,9")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",")]
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"--methods: unknown {sorted(unknown)}; choose from {METHODS}")
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    cases = [dict(b=args.batch, c=c, d=args.embed, h=h, k=k)
             for h in ints(args.sizes) for c in ints(args.channels) for k in ints(args.kernels)]

    print(harness.machine_info())
    print(f"float32, B={args.batch}, d={args.embed}, H x H -> 2H x 2H; time: min of "
          f"{args.repeats} (reference, lean: 3) after 1 warm-up, each method in a fresh process "
          "interleaved with bilinear, ratios to that bilinear; memory: VmHWM of a fresh process "
          "per method")
    from sapa.ops.backends import numba as cpu

    reason = cpu.jit_unavailable()
    print(f"cpu backend: {'numba kernels' if reason is None else 'UNAVAILABLE: ' + reason}")
    if "cpu" in methods and reason is None:
        t0 = time.perf_counter()
        make_step("cpu", **cases[0], backward=True)()
        print(f"cpu first call here (fwd+bwd, kernels loaded or compiled): "
              f"{time.perf_counter() - t0:.2f} s")
        warm = first_call_seconds(cold=False)
        print(f"cpu first call in a fresh process, warm cache: fwd {warm[0]:.2f} s, "
              f"bwd {warm[1]:.2f} s")
        if not args.no_compile_time:
            cold = first_call_seconds(cold=True)
            print(f"cpu first call in a fresh process, empty cache (compiles float32): "
                  f"fwd {cold[0]:.1f} s, bwd {cold[1]:.1f} s")
    print()

    results = []
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = lambda x, **kw: x  # noqa: E731
    for case in tqdm(cases, desc="cases", file=sys.stderr):
        results.append((case, measure_case(case, methods, args.repeats, not args.no_memory,
                                           args.reference_limit_gb)))
    print(table(results, methods))
    skipped = [f"{c['h']}²→{2 * c['h']}² C{c['c']} K{c['k']}" for c, r in results
               if "reference" in r and r["reference"]["fwd"] is None]
    if skipped:
        print(f"\nreference skipped (windows > {args.reference_limit_gb} GiB): "
              + ", ".join(skipped))
    for line in check_goals(results):
        print(line)
    if "cpu" in methods and reason is None:
        case = min((c for c, _ in results), key=lambda c: sum(
            abs(c[key] - val) for key, val in HEADLINE.items()))
        t = compute_only(**case)
        print(f"\nforward without allocating the output ({case['h']}²→{2 * case['h']}², "
              f"C{case['c']}, K{case['k']}): cpu kernel {t['cpu'].best * 1e3:.1f} ms, "
              f"bilinear out= {t['bilinear'].best * 1e3:.1f} ms, "
              f"ratio {t['cpu'].best / t['bilinear'].best:.2f}x")
    if args.plot and reason is None:
        rows = scaling_sweep(args.batch, max(ints(args.channels)), args.embed, args.repeats,
                             torch.get_num_threads(), sizes=ints(args.scaling_sizes),
                             kernels=ints(args.scaling_kernels),
                             h_k=min(64, max(ints(args.scaling_sizes))))
        print("\nscaling (cpu and bilinear, each point in a fresh process; ms):")
        keys = ["bilinear fwd", "cpu fwd", "bilinear fb", "cpu fb"]
        print(harness.markdown_table(
            ["H→2H", "K", "output points", *keys],
            [[f"{r['h']}→{2 * r['h']}", r["k"], r["points"], *(_ms(r[k]) for k in keys)]
             for r in rows]))
        plot(rows, args.plot, args.batch, max(ints(args.channels)))
        print(f"\nplot: {args.plot}")
    elif args.plot:
        print(f"\nno scaling sweep or plot: the cpu backend is unavailable ({reason})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
