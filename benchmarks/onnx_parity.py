"""How far ONNX Runtime's outputs are from PyTorch's, for every upsampler exported to ONNX.

Each upsampler of ``sapa.list_upsamplers()`` (default options) is built with ``--channels``
channels (random weights, seed 0), exported by ``sapa.deploy.export_upsampler``
(``torch.onnx.export(dynamo=True)``, dynamic axes) in float32 and in float16, and run in ONNX
Runtime's CPU provider on random inputs: the example's size, then another batch and size (a
``2H + 1 x 2W + 1`` guide where the upsampler takes any guide size). For each it prints the
largest ``|onnx - torch|`` over both inputs and the largest ratio to the documented bound
``atol + rtol |torch|`` (``sapa.deploy.tolerance``; at most 1 passes). Float16 is compared with
the float32 model of the same (rounded) weights and inputs, and so is PyTorch's own float16
output, printed beside it for scale.

The tests (tests/deploy) check every upsampler against the same tolerance at small sizes; this
script measures how far inside it they are at the sizes and default options of a real model, the
numbers of docs/deployment.md's parity table.

    python benchmarks/onnx_parity.py                 # C = 64, x 16 x 16, guide 32 x 32
    python benchmarks/onnx_parity.py --channels 256 --size 32
"""
from __future__ import annotations

import argparse
import copy
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def inputs(up, guided, c, b, h, w, odd, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=g)
    if not guided:
        return (x.to(dtype),)
    s = getattr(up, "guide_scale", None) or 2
    odd = odd and getattr(up, "guide_scale", None) is None
    return x.to(dtype), torch.randn(b, c, s * h + odd, s * w + odd, generator=g).to(dtype)


def torch_half_error(up, args) -> float:
    """``max |PyTorch float16 - PyTorch float32|`` of the same rounded weights and inputs."""
    with torch.no_grad():
        half = up(*args).float()
        full = copy.deepcopy(up).float()(*(a.float() for a in args))
    return float((half - full).abs().max())


def measure(name: str, args) -> list[str]:
    from sapa import build_upsampler, deploy
    from sapa.modules import is_guided

    guided = is_guided(name)
    row = [name]
    for dtype in (torch.float32, torch.float16):
        torch.manual_seed(0)
        up = build_upsampler(name, args.channels, args.channels).to(dtype).eval()
        cases = [(2, args.size, args.size, False, 0), (3, args.size + 1, args.size - 1, True, 1)]
        example = inputs(up, guided, args.channels, *cases[0], dtype)
        proto = deploy.export_upsampler(up, *example)
        session = deploy.onnx_session(proto)
        worst_abs, worst_ratio, torch16 = 0.0, 0.0, 0.0
        for case in cases:
            a = inputs(up, guided, args.channels, *case, dtype)
            p = deploy.check_onnx(up, session, a, strict=False)
            worst_abs, worst_ratio = max(worst_abs, p.max_abs), max(worst_ratio, p.max_ratio)
            if dtype == torch.float16:
                torch16 = max(torch16, torch_half_error(up, a))
        row += [f"{worst_abs:.1e}", f"{worst_ratio:.3f}"]
        if dtype == torch.float16:
            row.append(f"{torch16:.1e}")
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--channels", type=int, default=64, help="(default: %(default)s)")
    p.add_argument("--size", type=int, default=16, help="x's side (default: %(default)s)")
    p.add_argument("--upsamplers", help="comma-separated (default: every upsampler)")
    args = p.parse_args(argv)
    import sapa

    if args.channels < 1 or args.size < 3:
        p.error("--channels must be >= 1 and --size >= 3 (the second input is size - 1 wide, "
                "and a dynamic axis needs an example of at least 2)")
    names = (sapa.list_upsamplers() if args.upsamplers is None
             else [n.strip() for n in args.upsamplers.split(",") if n.strip()])
    unknown = [n for n in names if n not in sapa.list_upsamplers()]
    if unknown:
        p.error(f"--upsamplers: unknown {', '.join(unknown)}; known: "
                f"{', '.join(sapa.list_upsamplers())}")
    print(harness.machine_info(extra_modules=("onnx", "onnxscript", "onnxruntime")))
    print(f"\nC = {args.channels}, x {args.size}x{args.size} (batch 2) and "
          f"{args.size + 1}x{args.size - 1} (batch 3); ratio: worst |onnx - torch| / "
          "(atol + rtol |torch|), <= 1 passes\n")
    rows = [measure(n, args) for n in names]
    print(harness.markdown_table(
        ["upsampler", "fp32 max abs", "fp32 ratio", "fp16 max abs (vs fp32)", "fp16 ratio",
         "PyTorch fp16 max abs (vs fp32)"], rows))
    ok = all(float(r[2]) <= 1 and float(r[4]) <= 1 for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
