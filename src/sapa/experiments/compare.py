"""``sapa compare``: train one model of a task per upsampler and seed, report them side by side.

Examples::

    sapa compare --quick --out runs/quick                 # the whole pipeline in ~1-2 minutes
    sapa compare --out runs/compare                       # bilinear, carafe, sapa-b, sapa-g x 3 seeds
    sapa compare --out runs/compare --resume              # continue an interrupted comparison
    sapa compare --task depth --quick --out runs/depth    # another task (--task T --help: its options)
    sapa compare --upsamplers bilinear sapa-b:kernel_size=7 --out runs/k7
    torchrun --nproc_per_node 8 -m sapa compare --out runs/ddp   # one process per GPU

The task (``--task``, a ``sapa.tasks.base.Task``) supplies data, model, loss, inference,
metrics, table columns and figures; this module and ``trainer`` supply everything else.
Writes into ``--out``: ``results.json`` (``{"config", "environment", "command", "rows"}``, one
row per finished run), ``results.md`` (mean ± std over seeds), ``curves.png``, the task's
figures and ``runs/<upsampler>-seed<k>/checkpoint.pt``.
"""
from __future__ import annotations

import argparse
import numbers
import os
import shlex
import sys
import textwrap
import time

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from ..errors import UsageError
from ..tasks import get_task, list_tasks
from ..tasks.base import PRESET_KEYS, Task
from . import distributed as D
from .figures import draw_all
from .presets import PRESETS
from .results import (RESULTS_JSON, RESULTS_MD, atomic_write_json, atomic_write_text,
                      environment, load_results, results_markdown)
from .specs import run_name, split_upsamplers
from .trainer import TrainConfig, format_metric, train_run

DESCRIPTION = "train one model of a task per upsampler and seed, report them side by side"
DEFAULT_TASK = "segmentation"
# settings that do not change a run's final numbers: --resume may use other values
NOT_RESULT_KEYS = ("ckpt_every", "eval_every", "workers", "eval_batch_size")
# row keys the harness writes; a task's metric may not use them
ROW_KEYS = ("task", "upsampler", "seed", "params", "flops", "train_s", "iters", "world_size",
            "device", "checkpoint")

EXAMPLES = """examples:
  sapa compare --quick --out runs/quick       # bilinear vs sapa-b, 1 seed: a minute or two
  sapa compare --out runs/compare             # bilinear, carafe, sapa-b, sapa-g x 3 seeds
  sapa compare --out runs/compare --resume    # continue an interrupted comparison
  sapa compare --upsamplers bilinear sapa-b sapa-b:kernel_size=7 --out runs/k7
  sapa compare --data /data/VOCdevkit --image-size 256 --iters 20000 --out runs/voc
  sapa compare --task depth --help            # another task's options
  torchrun --nproc_per_node 8 -m sapa compare --out runs/ddp
"""


# ---- command line --------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser, task: Task | None = None) -> None:
    """The harness's options, then ``task``'s own group (default: the default task's)."""
    task = task or get_task(DEFAULT_TASK)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EXAMPLES
    p.add_argument("--task", default=DEFAULT_TASK, metavar="TASK",
                   help=f"one of {', '.join(list_tasks())} (default: %(default)s); "
                        "'--task TASK --help' lists that task's options")
    p.add_argument("--out", default="runs/compare", help="output folder (default: %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="the whole pipeline on a small budget (the task's quick presets: fewer "
                        "upsamplers, seeds, steps and samples)")
    p.add_argument("--resume", action="store_true",
                   help="continue the comparison in --out: finished runs are kept, interrupted "
                        "ones continue from their checkpoint, the configuration must match")
    p.add_argument("--upsamplers", nargs="+", metavar="SPEC",
                   help="upsamplers to compare, separated by spaces: names of "
                        "sapa.list_upsamplers(), optionally with options, e.g. "
                        "'sapa-b:kernel_size=7' (default for this task: "
                        f"{' '.join(task.default_upsamplers)}; --quick: "
                        f"{' '.join(task.quick_upsamplers)})")
    p.add_argument("--preset", choices=tuple(PRESETS),
                   help="a comparison of the paper, with its table in results.md: "
                        + "; ".join(f"{n}: {pr.help}" for n, pr in PRESETS.items())
                        + " (--upsamplers then defaults to the preset's)")
    p.add_argument("--seeds", type=int, nargs="+",
                   help=f"seeds, one run each (default: {_preset_text(task, 'seeds')})")
    g = p.add_argument_group("data")
    g.add_argument("--data", help="the task's generated data set (default) or a folder in one "
                                  "of the task's layouts (see its options below)")
    g.add_argument("--image-size", type=int,
                   help=f"side of the training images (default: {_preset_text(task, 'image_size')})")
    g.add_argument("--num-train", type=int,
                   help=f"training samples (default: {_preset_text(task, 'num_train')})")
    g.add_argument("--num-val", type=int,
                   help=f"validation samples (default: {_preset_text(task, 'num_val')})")
    g.add_argument("--data-seed", type=int, default=0,
                   help="seed of the generated data set (default: %(default)s)")
    g.add_argument("--workers", type=int, default=0, help="data loader processes (default: 0)")
    g = p.add_argument_group("training")
    g.add_argument("--iters", type=int,
                   help=f"training steps per run (default: {_preset_text(task, 'iters')})")
    g.add_argument("--batch-size", type=int,
                   help=f"global batch size (default: {_preset_text(task, 'batch_size')})")
    g.add_argument("--eval-batch-size", type=int,
                   help="validation batch size per process "
                        f"(default: {_preset_text(task, 'eval_batch_size')})")
    g.add_argument("--lr", type=float,
                   help=f"AdamW learning rate (default: {_preset_text(task, 'lr')})")
    g.add_argument("--weight-decay", type=float,
                   help=f"AdamW weight decay (default: {_preset_text(task, 'weight_decay')})")
    g.add_argument("--eval-every", type=int,
                   help=f"validate every this many steps (default: {_preset_text(task, 'eval_every')})")
    g.add_argument("--ckpt-every", type=int,
                   help=f"checkpoint every this many steps (default: {_preset_text(task, 'ckpt_every')})")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="(default: cuda when available)")
    g.add_argument("--threads", type=int,
                   help="CPU threads per process (default: torch's choice; torchrun sets 1 "
                        "when it starts several processes)")
    g.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    doc = " ".join((type(task).__doc__ or "").strip().split("\n\n")[0].split())
    task.add_arguments(p.add_argument_group(f"--task {task.name}", textwrap.fill(doc, 76)))


def _preset_text(task: Task, key: str) -> str:
    default, quick = task.presets[key]
    show = (lambda v: " ".join(map(str, v))) if isinstance(default, list) else str
    return show(default) if default == quick else f"{show(default)}; --quick: {show(quick)}"


def parse_args(argv: list[str], prog: str = "sapa compare") -> argparse.Namespace:
    """Parse ``sapa compare`` arguments: ``--task`` first, then the harness's options together
    with that task's own (so ``--task T --help`` shows ``T``'s)."""
    pre = argparse.ArgumentParser(prog=prog, add_help=False)
    pre.add_argument("--task", default=DEFAULT_TASK)
    known, _ = pre.parse_known_args(argv)
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    try:
        task = get_task(known.task)
    except UsageError as exc:
        parser.error(str(exc))
    add_arguments(parser, task)
    return parser.parse_args(argv)


# ---- settings ------------------------------------------------------------------------------------

def resolve(args: argparse.Namespace) -> dict:
    """The full settings: explicit arguments, else the task's ``--quick`` or default preset;
    every check that can fail on user input runs here (``UsageError``), before any work."""
    task = get_task(args.task)
    s = {}
    for key in PRESET_KEYS:
        val = getattr(args, key, None)
        s[key] = val if val is not None else task.presets[key][1 if args.quick else 0]
    preset = PRESETS[args.preset] if getattr(args, "preset", None) else None
    if preset is not None and preset.task != task.name:
        raise UsageError(f"--preset {preset.name} is a comparison of --task {preset.task}, "
                         f"not {task.name}")
    upsamplers = split_upsamplers(args.upsamplers or list(
        preset.upsamplers if preset is not None else
        task.quick_upsamplers if args.quick else task.default_upsamplers))
    seeds = list(s["seeds"])
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UsageError(f"--seeds must be distinct ints >= 0, got {seeds}")
    for key in ("image_size", "num_train", "num_val"):
        if s[key] is not None and s[key] < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be >= 1, got {s[key]}")
    if args.data_seed < 0:
        raise UsageError(f"--data-seed must be >= 0, got {args.data_seed}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    train = TrainConfig(iters=s["iters"], batch_size=s["batch_size"], lr=s["lr"],
                        weight_decay=s["weight_decay"], eval_every=s["eval_every"],
                        ckpt_every=s["ckpt_every"], eval_batch_size=s["eval_batch_size"],
                        workers=args.workers)
    base = {"data": args.data, "data_seed": args.data_seed, "image_size": s["image_size"],
            "num_train": s["num_train"], "num_val": s["num_val"]}
    own = task.resolve(args, {"quick": bool(args.quick), **base})
    clash = sorted(set(own) & (set(train.to_dict()) | {"task"}))
    if clash:
        raise TypeError(f"task {task.name!r}: resolve() returned harness keys {clash}")
    config = {"task": task.name, **own, **{k: v for k, v in base.items() if k not in own},
              **train.to_dict()}
    return {"task": task, "upsamplers": upsamplers, "seeds": seeds, "config": config,
            "train": train, "out": args.out, "resume": args.resume, "preset": preset,
            "figures": not args.no_figures, "device": args.device, "threads": args.threads}


def _command() -> str:
    """This command line as typed (near enough: ``torchrun`` options are reduced to the
    number of processes per node)."""
    prog = os.path.basename(sys.argv[0]) if sys.argv else "sapa"
    prog = ["python", "-m", "sapa"] if prog == "__main__.py" else [prog]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        prog = ["torchrun", "--nproc_per_node", os.environ.get("LOCAL_WORLD_SIZE", "?"),
                "-m", "sapa"]
    return shlex.join([*prog, *sys.argv[1:]])


# ---- one comparison ------------------------------------------------------------------------------

def count_flops(model: torch.nn.Module, example) -> int:
    """FLOPs of ``model(example)`` in eval mode (``torch.utils.flop_counter``, 2 per
    multiply-add)."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(example)
    model.train(was_training)
    return int(counter.get_total_flops())


def run_dir(out: str, upsampler: str, seed: int) -> str:
    return os.path.join(out, "runs", run_name(upsampler, seed))


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
    old = {"task": DEFAULT_TASK, **data.get("config", {})}  # before --task, every run was this
    diff = [k for k in sorted(set(old) | set(config)) if k not in NOT_RESULT_KEYS
            and old.get(k) != config.get(k)]
    if diff:
        return ("--resume: this command's settings differ from those of the comparison in "
                f"{out}: " + "; ".join(f"{k}: {old.get(k)!r} there, {config.get(k)!r} now" for k in diff)), []
    return None, data["rows"]


def _write_results(settings, rows, env, command):
    out, task = settings["out"], settings["task"]
    data = {"config": settings["config"], "environment": env, "command": command, "rows": rows}
    atomic_write_json(os.path.join(out, RESULTS_JSON), data)
    md = results_markdown(data, task.columns, settings["upsamplers"], task.table_note)
    if settings.get("preset") is not None:
        md = md.rstrip("\n") + "\n\n" + settings["preset"].markdown(data) + "\n"
    atomic_write_text(os.path.join(out, RESULTS_MD), md)


def _row(task: Task, upsampler: str, seed: int, final: dict, model, example, ctx, ckpt: str) -> dict:
    """The ``results.json`` row of a finished run: its identity, every float metric, cost, the
    meter's non-float extras, the checkpoint."""
    metrics = final["metrics"]
    clash = sorted(set(metrics) & set(ROW_KEYS))
    if clash:
        raise TypeError(f"task {task.name!r}: metric names {clash} clash with the row's own keys")
    floats = {k: float(v) for k, v in metrics.items()
              if isinstance(v, numbers.Real) and not isinstance(v, bool)}
    missing = [c.key for c in task.columns if c.key not in floats]
    if missing:
        raise TypeError(f"task {task.name!r}: the meter computed no float for columns {missing}")
    return {
        "task": task.name, "upsampler": upsampler, "seed": seed, **floats,
        "params": sum(p.numel() for p in model.parameters()),
        "flops": count_flops(model, example),
        "train_s": round(final["train_s"], 2),
        "iters": final["iter"], "world_size": ctx.world_size, "device": str(ctx.device.type),
        **{k: v for k, v in metrics.items() if k not in floats},
        "checkpoint": ckpt,
    }


def run(settings: dict, ctx: D.DistContext) -> list[dict]:
    """Run every pending ``(upsampler, seed)``; return all rows (rank 0's view)."""
    task, out, config, train_cfg = settings["task"], settings["out"], settings["config"], settings["train"]
    if train_cfg.batch_size % ctx.world_size:
        raise UsageError(f"--batch-size {train_cfg.batch_size} must be divisible by the number "
                         f"of processes ({ctx.world_size})")
    err, rows = _prepare_out(settings) if ctx.is_main else (None, [])
    err, rows = D.broadcast_object(ctx, (err, rows))
    if err:
        raise UsageError(err)
    train_set, val_set = task.build_datasets(config)  # fails on bad --data before anything is written
    env, command = environment(), _command()
    env["world_size"] = ctx.world_size
    if ctx.is_main:
        _write_results(settings, rows, env, command)

    done = {(r["upsampler"], r["seed"]) for r in rows}
    todo = [(u, s) for u in settings["upsamplers"] for s in settings["seeds"] if (u, s) not in done]
    if ctx.is_main:
        print(f"sapa compare --task {task.name}: {len(todo)} run(s) to do, {len(done)} finished, "
              f"in {out}", flush=True)
    outer = tqdm(todo, desc="runs", dynamic_ncols=True, disable=not ctx.is_main or None)
    for upsampler, seed in outer:
        ckpt_path = os.path.join(run_dir(out, upsampler, seed), "checkpoint.pt")
        ckpt = None
        if ctx.is_main and settings["resume"] and os.path.exists(ckpt_path):
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        ckpt = D.broadcast_object(ctx, ckpt)
        if ckpt is not None and ctx.is_main:
            print(f"  {upsampler} seed {seed}: resuming at step {ckpt['iter']}", flush=True)
        torch.manual_seed(seed)
        model = task.build_model(config, upsampler, train_set)
        final = train_run(task, model, train_set, val_set, config, train_cfg, ctx, seed=seed,
                          ckpt_path=ckpt_path, checkpoint=ckpt, desc=f"{upsampler} s{seed}",
                          run={"upsampler": upsampler, "config": config})
        if ctx.is_main:
            model.load_state_dict(final["model"])
            rows.append(_row(task, upsampler, seed, final, model,
                             task.example_input(config, ctx.device), ctx,
                             os.path.relpath(ckpt_path, out)))
            _write_results(settings, rows, env, command)
            shown = "  ".join(format_metric(task, final["metrics"], c.key) for c in task.columns)
            print(f"  {upsampler} seed {seed}: {shown}  ({final['train_s']:.0f} s)", flush=True)
        D.barrier(ctx)
    outer.close()
    if ctx.is_main and settings["figures"]:
        write_figures(settings, train_set, val_set, ctx.device)
    D.barrier(ctx)
    return rows


def write_figures(settings, train_set, val_set, device) -> list[str]:
    """Draw the figures from the runs' checkpoints (the first seed's model per upsampler)."""
    task, out, config = settings["task"], settings["out"], settings["config"]
    models, curves = {}, {}
    for u in settings["upsamplers"]:
        for s in settings["seeds"]:
            path = os.path.join(run_dir(out, u, s), "checkpoint.pt")
            if not os.path.exists(path):
                continue
            ck = torch.load(path, map_location="cpu", weights_only=False)
            curves.setdefault(u, []).append(ck["curves"])
            if u not in models:
                m = task.build_model(config, u, train_set)
                m.load_state_dict(ck["model"])
                models[u] = m.to(device).eval()
    paths = draw_all(out, task, models, curves, val_set, device)
    print("sapa compare: wrote " + ", ".join(os.path.basename(p) for p in paths), flush=True)
    return paths


def _error(exc: UsageError) -> int:
    print(f"sapa compare: error: {exc}", file=sys.stderr)
    return 2


def main(args: argparse.Namespace) -> int:
    """Run the comparison ``args`` asks for. A ``UsageError`` (bad option, data or ``--out``)
    is printed as one line and returns 2; any other exception propagates with its traceback."""
    try:
        settings = resolve(args)
    except UsageError as exc:
        return _error(exc)
    if settings["threads"]:
        torch.set_num_threads(settings["threads"])
    try:
        ctx = D.setup(settings["device"])
    except UsageError as exc:
        return _error(exc)
    tic = time.perf_counter()
    try:
        run(settings, ctx)
    except UsageError as exc:
        return _error(exc)
    finally:
        D.teardown(ctx)
    if ctx.is_main:
        print(f"sapa compare: done in {time.perf_counter() - tic:.0f} s; "
              f"{os.path.join(settings['out'], RESULTS_MD)}", flush=True)
        with open(os.path.join(settings["out"], RESULTS_MD)) as f:
            print(f.read().split("\n\n")[1])
    return 0
