"""``sapa compare``: train one segmentation model per upsampler and seed, report them side by side.

Examples::

    sapa compare --quick --out runs/quick                 # the whole pipeline in ~1-2 minutes
    sapa compare --out runs/compare                       # bilinear, carafe, sapa-b, sapa-g x 3 seeds
    sapa compare --out runs/compare --resume              # continue an interrupted comparison
    sapa compare --data /data/ADEChallengeData2016 --image-size 256 --iters 20000 --out runs/ade
    torchrun --nproc_per_node 8 -m sapa compare --out runs/ddp   # one process per GPU

Writes into ``--out``: ``results.json`` (``{"config", "environment", "command", "rows"}``, one
row per finished run), ``results.md`` (mean ± std over seeds), ``predictions.png``,
``features.png``, ``curves.png`` and ``runs/<upsampler>-seed<k>/checkpoint.pt``.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from ..models import MODELS, build_model
from ..modules import list_upsamplers
from . import distributed as D
from .figures import draw_all
from .results import (RESULTS_JSON, RESULTS_MD, atomic_write_json, atomic_write_text,
                      environment, load_results, results_markdown)
from .trainer import TrainConfig, train_run

DEFAULT_UPSAMPLERS = "bilinear,carafe,sapa-b,sapa-g"
# every setting that --quick changes, and its value with and without --quick
PRESETS = {
    #                 default run            --quick
    "upsamplers": (DEFAULT_UPSAMPLERS, "bilinear,sapa-b"),
    "seeds": ([0, 1, 2], [0]),
    "image_size": (64, 64),
    "num_train": (1024, 256),
    "num_val": (128, 64),
    "widths": ("16,32,64,128", "16,32,64,128"),
    "iters": (500, 150),
    "batch_size": (8, 8),
    "eval_every": (100, 50),
    "ckpt_every": (50, 50),
}
FOLDER_IMAGE_SIZE = 256
# settings that do not change a run's final numbers: --resume may use other values
NOT_RESULT_KEYS = ("ckpt_every", "eval_every", "workers", "eval_batch_size")


EXAMPLES = """examples:
  sapa compare --quick --out runs/quick       # bilinear vs sapa-b, 1 seed: a minute or two
  sapa compare --out runs/compare             # bilinear, carafe, sapa-b, sapa-g x 3 seeds
  sapa compare --out runs/compare --resume    # continue an interrupted comparison
  sapa compare --data /data/VOCdevkit --image-size 256 --iters 20000 --out runs/voc
  torchrun --nproc_per_node 8 -m sapa compare --out runs/ddp
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EXAMPLES
    p.add_argument("--out", default="runs/compare", help="output folder (default: %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="the whole pipeline on a small budget: bilinear and sapa-b, 1 seed, "
                        "150 steps (about a minute on 2 cores)")
    p.add_argument("--resume", action="store_true",
                   help="continue the comparison in --out: finished runs are kept, interrupted "
                        "ones continue from their checkpoint, the configuration must match")
    p.add_argument("--upsamplers", help=f"comma-separated names (default: {DEFAULT_UPSAMPLERS}); "
                                        "see sapa.list_upsamplers()")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds, one run each (default: 0 1 2)")
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=MODELS, default="segnet", help="(default: %(default)s)")
    g.add_argument("--widths", help="SegNet channels per stage, shallow to deep "
                                    "(default: 16,32,64,128; the depth is their count)")
    g.add_argument("--backbone", default="resnet18",
                   help="timm backbone of --model fpn (default: %(default)s)")
    g.add_argument("--pretrained", action="store_true",
                   help="--model fpn: load the backbone's pretrained weights (timm cache)")
    g.add_argument("--channels", type=int, default=128,
                   help="--model fpn: pyramid width (default: %(default)s)")
    g = p.add_argument_group("data")
    g.add_argument("--data", default="synthetic",
                   help="'synthetic' (generated, the default) or a folder in the ADE20K or "
                        "Pascal VOC layout")
    g.add_argument("--image-size", type=int,
                   help=f"side of the (square) training and validation images (default: 64 for "
                        f"synthetic, {FOLDER_IMAGE_SIZE} for folders)")
    g.add_argument("--num-train", type=int,
                   help="synthetic: training samples to generate (default 1024); folders: use "
                        "at most this many (default: all)")
    g.add_argument("--num-val", type=int, help="as --num-train, for validation (default 128)")
    g.add_argument("--data-seed", type=int, default=0,
                   help="seed of the generated data set (default: %(default)s)")
    g.add_argument("--workers", type=int, default=0, help="data loader processes (default: 0)")
    g = p.add_argument_group("training")
    g.add_argument("--iters", type=int, help="training steps per run (default: 500)")
    g.add_argument("--batch-size", type=int, help="global batch size (default: 8)")
    g.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate (default: %(default)s)")
    g.add_argument("--weight-decay", type=float, default=1e-4, help="(default: %(default)s)")
    g.add_argument("--eval-every", type=int, help="validate every this many steps (default: 100)")
    g.add_argument("--ckpt-every", type=int, help="checkpoint every this many steps (default: 50)")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="(default: cuda when available)")
    g.add_argument("--threads", type=int,
                   help="CPU threads per process (default: torch's choice; torchrun sets 1 "
                        "when it starts several processes)")
    g.add_argument("--no-figures", action="store_true", help="skip the PNG figures")


def _parse_ints(name, text):
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--{name} must be comma-separated positive ints, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise ValueError(f"--{name} must be comma-separated positive ints, got {text!r}")
    return vals


def resolve(args: argparse.Namespace) -> dict:
    """The full settings: explicit arguments, else the ``--quick`` or default preset; every
    check that can fail runs here, before any work."""
    s = {}
    for key, (default, quick) in PRESETS.items():
        val = getattr(args, key, None)
        s[key] = val if val is not None else (quick if args.quick else default)
    synthetic = args.data == "synthetic"
    if not synthetic:
        if getattr(args, "image_size", None) is None:
            s["image_size"] = FOLDER_IMAGE_SIZE
        for key in ("num_train", "num_val"):
            s[key] = getattr(args, key, None)  # folders: all samples unless asked
    upsamplers = [u.strip() for u in s["upsamplers"].split(",") if u.strip()]
    known = list_upsamplers()
    bad = [u for u in upsamplers if u not in known]
    if not upsamplers or bad:
        raise ValueError(f"--upsamplers: unknown name(s) {bad or s['upsamplers']!r}; known: {', '.join(known)}")
    if len(set(upsamplers)) != len(upsamplers):
        raise ValueError(f"--upsamplers lists a name twice: {s['upsamplers']!r}")
    seeds = list(s["seeds"])
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--seeds must be distinct ints >= 0, got {seeds}")
    widths = _parse_ints("widths", s["widths"]) if isinstance(s["widths"], str) else tuple(s["widths"])
    stride = 2 ** len(widths) if args.model == "segnet" else 32
    size = s["image_size"]
    if not isinstance(size, int) or size < stride or size % stride:
        raise ValueError(f"--image-size must be a positive multiple of {stride} for --model "
                         f"{args.model}" + (f" with {len(widths)} stages" if args.model == "segnet" else "")
                         + f", got {size}")
    for key in ("num_train", "num_val"):
        if s[key] is not None and s[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {s[key]}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    if args.channels < 1:
        raise ValueError(f"--channels must be >= 1, got {args.channels}")
    if not synthetic and not os.path.isdir(args.data):
        raise ValueError(f"--data must be 'synthetic' or an existing folder, got {args.data!r}")
    train = TrainConfig(iters=s["iters"], batch_size=s["batch_size"], lr=args.lr,
                        weight_decay=args.weight_decay, eval_every=s["eval_every"],
                        ckpt_every=s["ckpt_every"], workers=args.workers)
    config = {
        "model": args.model,
        "widths": list(widths) if args.model == "segnet" else None,
        "backbone": args.backbone if args.model == "fpn" else None,
        "pretrained": bool(args.pretrained) if args.model == "fpn" else None,
        "channels": args.channels if args.model == "fpn" else None,
        "data": "synthetic" if synthetic else os.path.abspath(args.data),
        "image_size": size,
        "num_train": s["num_train"],
        "num_val": s["num_val"],
        "data_seed": args.data_seed,
        **train.to_dict(),
    }
    return {"upsamplers": upsamplers, "seeds": seeds, "config": config, "train": train,
            "out": args.out, "resume": args.resume, "figures": not args.no_figures,
            "device": args.device, "threads": args.threads}


def _command() -> str:
    """This command line as typed (near enough: ``torchrun`` options are reduced to the
    number of processes per node)."""
    prog = os.path.basename(sys.argv[0]) if sys.argv else "sapa"
    prog = ["python", "-m", "sapa"] if prog == "__main__.py" else [prog]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        prog = ["torchrun", "--nproc_per_node", os.environ.get("LOCAL_WORLD_SIZE", "?"),
                "-m", "sapa"]
    return shlex.join([*prog, *sys.argv[1:]])


def build_datasets(config: dict):
    """``(train, val)`` data sets; each has ``num_classes``, ``class_names``, ``ignore_index``."""
    from ..tasks.segmentation import FolderSegmentation, SyntheticSegmentation

    if config["data"] == "synthetic":
        return (SyntheticSegmentation("train", config["num_train"], config["image_size"], config["data_seed"]),
                SyntheticSegmentation("val", config["num_val"], config["image_size"], config["data_seed"]))
    return (FolderSegmentation(config["data"], "train", config["image_size"], config["num_train"]),
            FolderSegmentation(config["data"], "val", config["image_size"], config["num_val"]))


def make_model(config: dict, num_classes: int, upsampler: str):
    return build_model(config["model"], num_classes, upsampler, widths=config["widths"] or (),
                       backbone=config["backbone"], pretrained=bool(config["pretrained"]),
                       channels=config["channels"] or 128)


def count_flops(model: torch.nn.Module, image_size: int, device) -> int:
    """FLOPs of one forward pass on one ``3 x S x S`` image (``torch.utils.flop_counter``)."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size, device=device))
    model.train(was_training)
    return int(counter.get_total_flops())


def run_dir(out: str, upsampler: str, seed: int) -> str:
    return os.path.join(out, "runs", f"{upsampler}-seed{seed}")


def _prepare_out(settings) -> tuple[str | None, list]:
    """Rank 0: check ``--out`` against ``--resume``; ``(error message or None, finished rows)``."""
    out, config = settings["out"], settings["config"]
    path = os.path.join(out, RESULTS_JSON)
    try:
        data = load_results(path)
    except (ValueError, OSError) as exc:
        return f"cannot read {path}: {exc}", []
    earlier = data is not None or os.path.isdir(os.path.join(out, "runs"))
    if not settings["resume"]:
        if earlier:
            return (f"--out {out} holds an earlier comparison; pass --resume to continue it or "
                    "choose another --out"), []
        return None, []
    if data is None:
        return None, []
    old = data.get("config", {})
    diff = [k for k in sorted(set(old) | set(config)) if k not in NOT_RESULT_KEYS
            and old.get(k) != config.get(k)]
    if diff:
        return ("--resume: this command's settings differ from those of the comparison in "
                f"{out}: " + "; ".join(f"{k}: {old.get(k)!r} there, {config.get(k)!r} now" for k in diff)), []
    return None, data["rows"]


def _write_results(settings, rows, env, command):
    out = settings["out"]
    data = {"config": settings["config"], "environment": env, "command": command, "rows": rows}
    atomic_write_json(os.path.join(out, RESULTS_JSON), data)
    atomic_write_text(os.path.join(out, RESULTS_MD), results_markdown(data, settings["upsamplers"]))


def run(settings: dict, ctx: D.DistContext) -> list[dict]:
    """Run every pending ``(upsampler, seed)``; return all rows (rank 0's view)."""
    out, config, train_cfg = settings["out"], settings["config"], settings["train"]
    if train_cfg.batch_size % ctx.world_size:
        raise ValueError(f"--batch-size {train_cfg.batch_size} must be divisible by the number "
                         f"of processes ({ctx.world_size})")
    err, rows = _prepare_out(settings) if ctx.is_main else (None, [])
    err, rows = D.broadcast_object(ctx, (err, rows))
    if err:
        raise ValueError(err)
    train_set, val_set = build_datasets(config)  # fails on bad --data before anything is written
    env, command = environment(), _command()
    env["world_size"] = ctx.world_size
    if ctx.is_main:
        _write_results(settings, rows, env, command)

    nc, ignore = train_set.num_classes, train_set.ignore_index
    done = {(r["upsampler"], r["seed"]) for r in rows}
    todo = [(u, s) for u in settings["upsamplers"] for s in settings["seeds"] if (u, s) not in done]
    if ctx.is_main:
        print(f"sapa compare: {len(todo)} run(s) to do, {len(done)} finished, in {out}", flush=True)
    outer = tqdm(todo, desc="runs", dynamic_ncols=True, disable=not ctx.is_main or None)
    for upsampler, seed in outer:
        rdir = run_dir(out, upsampler, seed)
        ckpt_path = os.path.join(rdir, "checkpoint.pt")
        ckpt = None
        if ctx.is_main and settings["resume"] and os.path.exists(ckpt_path):
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        ckpt = D.broadcast_object(ctx, ckpt)
        if ckpt is not None and ctx.is_main:
            print(f"  {upsampler} seed {seed}: resuming at step {ckpt['iter']}", flush=True)
        torch.manual_seed(seed)
        model = make_model(config, nc, upsampler)
        final = train_run(model, train_set, val_set, train_cfg, ctx, seed=seed, num_classes=nc,
                          ignore_index=ignore, ckpt_path=ckpt_path, checkpoint=ckpt,
                          desc=f"{upsampler} s{seed}")
        if ctx.is_main:
            m = final["metrics"]
            model.load_state_dict(final["model"])
            row = {
                "upsampler": upsampler, "seed": seed,
                "miou": m["miou"], "biou": m["biou"], "acc": m["acc"],
                "params": sum(p.numel() for p in model.parameters()),
                "flops": count_flops(model, config["image_size"], ctx.device),
                "train_s": round(final["train_s"], 2),
                "iters": final["iter"], "world_size": ctx.world_size,
                "device": str(ctx.device.type), "iou_per_class": m["iou_per_class"],
                "checkpoint": os.path.relpath(ckpt_path, out),
            }
            rows.append(row)
            _write_results(settings, rows, env, command)
            print(f"  {upsampler} seed {seed}: mIoU {100 * m['miou']:.2f}  bIoU "
                  f"{100 * m['biou']:.2f}  acc {100 * m['acc']:.2f}  ({final['train_s']:.0f} s)",
                  flush=True)
        D.barrier(ctx)
    outer.close()
    if ctx.is_main and settings["figures"]:
        write_figures(settings, rows, val_set, ctx.device)
    D.barrier(ctx)
    return rows


def write_figures(settings, rows, val_set, device) -> list[str]:
    """Draw the figures from the runs' checkpoints (the first seed's model per upsampler)."""
    out, config = settings["out"], settings["config"]
    models, curves = {}, {}
    for u in settings["upsamplers"]:
        for s in settings["seeds"]:
            path = os.path.join(run_dir(out, u, s), "checkpoint.pt")
            if not os.path.exists(path):
                continue
            ck = torch.load(path, map_location="cpu", weights_only=False)
            curves.setdefault(u, []).append(ck["curves"])
            if u not in models:
                m = make_model(config, val_set.num_classes, u)
                m.load_state_dict(ck["model"])
                models[u] = m.to(device).eval()
    paths = draw_all(out, models, curves, val_set, val_set.class_names, val_set.ignore_index, device)
    print("sapa compare: wrote " + ", ".join(os.path.basename(p) for p in paths), flush=True)
    return paths


def main(args: argparse.Namespace) -> int:
    try:
        settings = resolve(args)
    except ValueError as exc:
        print(f"sapa compare: error: {exc}", file=sys.stderr)
        return 2
    if settings["threads"]:
        torch.set_num_threads(settings["threads"])
    ctx = D.setup(settings["device"])
    tic = time.perf_counter()
    try:
        run(settings, ctx)
    except (ValueError, ImportError) as exc:
        print(f"sapa compare: error: {exc}", file=sys.stderr)
        return 2
    finally:
        D.teardown(ctx)
    if ctx.is_main:
        print(f"sapa compare: done in {time.perf_counter() - tic:.0f} s; "
              f"{os.path.join(settings['out'], RESULTS_MD)}", flush=True)
        with open(os.path.join(settings["out"], RESULTS_MD)) as f:
            print(f.read().split("\n\n")[1])
    return 0
