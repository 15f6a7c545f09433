"""Inference of exported models in ONNX Runtime (CPU): each upsampler against bilinear.

For each model (``--models``: SegNet, the ``sapa compare`` default, and SegFormer) and each
upsampler (``--upsamplers``, bilinear always included), it builds the model (random weights,
eval mode), exports it with ``sapa.deploy.export_onnx`` (``torch.onnx.export(dynamo=True)``,
batch and image size dynamic, as ``sapa export`` does), checks ONNX Runtime against PyTorch on
the benchmark input (``sapa.deploy.check_onnx``, the documented tolerance) and times, for each
thread count of ``--threads``:

- ONNX Runtime (CPU provider, ``intra_op_num_threads`` = the count, one inter-op thread): one
  inference of a ``--batch x 3 x S x S`` image (``S = --image-size``), the minimum over
  ``--repeats`` runs after ``--warmup``, every model's session called round-robin
  (``harness.time_interleaved``), so a burst of load from other processes hits all alike; the
  ratio is to bilinear's time in the same run;
- PyTorch eager on the same input and thread count (``torch.set_num_threads``, no grad; the
  sapa ops on their automatic backend: numba on the CPU), round-robin as well, and ONNX Runtime's
  time over PyTorch's.

It also prints the export time, the number of ONNX nodes and the file size. Timings are wall
time: on a shared machine read the ratios, and the load average printed with the machine.

    python benchmarks/onnx_inference.py                        # SegNet and SegFormer-B0, 256x256
    python benchmarks/onnx_inference.py --models segnet --threads 1
    python benchmarks/onnx_inference.py --models segformer --upsamplers carafe,sapa-b,sapa-g
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

MODELS = ("segnet", "segformer")
NUM_CLASSES = 150  # ADE20K's, as the paper's segmentation models


def build_model(model: str, upsampler: str, *, widths=(32, 64, 128, 256),
                segformer_size: str = "b0"):
    """The model with ``upsampler``, random weights, eval mode (seeded: the same weights in
    every run)."""
    from sapa.models import SegFormer, SegNet

    torch.manual_seed(0)
    if model == "segnet":
        return SegNet(NUM_CLASSES, upsampler, widths).eval()
    if model == "segformer":
        return SegFormer(NUM_CLASSES, upsampler, segformer_size).eval()
    raise ValueError(f"model must be one of {MODELS}, got {model!r}")


def prepare(model_name: str, upsampler: str, image: torch.Tensor, args) -> dict:
    """Export one model and open its ONNX Runtime sessions; the parity check on ``image``."""
    from sapa import deploy

    model = build_model(model_name, upsampler, widths=args.widths,
                        segformer_size=args.segformer_size)
    # the example batch must be >= 2 for a dynamic batch axis
    example = image.expand(max(2, image.shape[0]), -1, -1, -1).contiguous()
    tic = time.perf_counter()
    proto = deploy.export_onnx(model, (example,), axes=deploy.image_axes(model),
                               input_names=["image"], output_names=["logits"])
    export_s = time.perf_counter() - tic
    sessions = {t: deploy.onnx_session(proto, t) for t in args.threads}
    parity = deploy.check_onnx(model, sessions[args.threads[0]], (image,), strict=False)
    return {"model": model, "sessions": sessions, "export_s": export_s, "parity": parity,
            "nodes": len(proto.graph.node), "mib": proto.ByteSize() / 2**20,
            "params": sum(p.numel() for p in model.parameters())}


def time_all(prepared: dict, image: torch.Tensor, threads: int, args) -> dict:
    """``{upsampler: (onnx Timing, torch Timing)}`` at ``threads`` threads, round-robin."""
    array = image.numpy()

    def onnx_call(session):
        return lambda: session.run(None, {"image": array})

    def torch_call(model):
        def call():
            with torch.no_grad():
                model(image)
        return call

    onnx_t = harness.time_interleaved(
        {u: onnx_call(p["sessions"][threads]) for u, p in prepared.items()},
        warmup=args.warmup, repeats=args.repeats)
    torch.set_num_threads(threads)
    torch_t = harness.time_interleaved(
        {u: torch_call(p["model"]) for u, p in prepared.items()},
        warmup=args.warmup, repeats=args.repeats)
    return {u: (onnx_t[u], torch_t[u]) for u in prepared}


def table(prepared: dict, timings: dict) -> str:
    """One row per upsampler: per thread count ONNX Runtime ms, / bilinear, PyTorch ms,
    ONNX / PyTorch; then export s, nodes, MiB, parity."""
    headers = ["upsampler"]
    for t in timings:
        headers += [f"ORT ms ({t} thr)", "/ bilinear", f"torch ms ({t} thr)", "ORT / torch"]
    headers += ["export s", "nodes", "MiB", "max abs diff"]
    rows = []
    for u, p in prepared.items():
        row = [u]
        for per in timings.values():
            o, t = per[u]
            base = per["bilinear"][0].best
            row += [f"{o.best * 1e3:.1f}", f"{o.best / base:.2f}x", f"{t.best * 1e3:.1f}",
                    f"{o.best / t.best:.2f}x"]
        row += [f"{p['export_s']:.0f}", str(p["nodes"]), f"{p['mib']:.2f}",
                f"{p['parity'].max_abs:.1e}" + ("" if p["parity"].ok else " (OUTSIDE)")]
        rows.append(row)
    return harness.markdown_table(headers, rows)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS),
                   help="comma-separated, of %(default)s (default: both)")
    p.add_argument("--upsamplers", default=None,
                   help="comma-separated names or specs; bilinear is always included "
                        "(default: every name of sapa.list_upsamplers())")
    p.add_argument("--image-size", type=int, default=256,
                   help="image side, a multiple of 32 (default: %(default)s)")
    p.add_argument("--batch", type=int, default=1, help="(default: %(default)s)")
    p.add_argument("--threads", default="1,2",
                   help="comma-separated thread counts (default: %(default)s)")
    p.add_argument("--widths", default="32,64,128,256",
                   help="SegNet's channels per stage (default: %(default)s, sapa compare's)")
    p.add_argument("--segformer-size", default="b0", help="MiT size (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=10, help="timed runs (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs (default: %(default)s)")
    args = p.parse_args(argv)
    import sapa

    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in args.models:
        if m not in MODELS:
            p.error(f"--models: unknown model {m!r}; known: {', '.join(MODELS)}")
    names = sapa.list_upsamplers() if args.upsamplers is None else [
        n.strip() for n in args.upsamplers.split(",") if n.strip()]
    args.names = ["bilinear", *[n for n in names if n != "bilinear"]]
    try:
        args.threads = [int(t) for t in args.threads.split(",")]
        args.widths = tuple(int(w) for w in args.widths.split(","))
    except ValueError:
        p.error("--threads and --widths take comma-separated ints")
    if min(args.threads) < 1 or args.batch < 1 or args.repeats < 1 or args.warmup < 0:
        p.error("--threads, --batch and --repeats must be >= 1, --warmup >= 0")
    stride = 2 ** len(args.widths) if args.models == ["segnet"] else 32
    if args.image_size < stride or args.image_size % stride:
        p.error(f"--image-size must be a positive multiple of {stride}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    print(harness.machine_info(extra_modules=("numba", "onnx", "onnxscript", "onnxruntime",
                                              "transformers")))
    image = torch.rand(args.batch, 3, args.image_size, args.image_size,
                       generator=torch.Generator().manual_seed(0))
    ok = True
    for model_name in args.models:
        prepared = {u: prepare(model_name, u, image, args) for u in args.names}
        timings = {t: time_all(prepared, image, t, args) for t in args.threads}
        what = (f"SegNet (widths {','.join(map(str, args.widths))})" if model_name == "segnet"
                else f"SegFormer-{args.segformer_size}")
        print(f"\n{what}, {NUM_CLASSES} classes, input {args.batch}x3x{args.image_size}x"
              f"{args.image_size}; min of {args.repeats} after {args.warmup} warm-up, "
              "round-robin\n")
        print(table(prepared, timings))
        ok = ok and all(p["parity"].ok for p in prepared.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
