"""``sapa compare``: train one model of a task per upsampler and seed, report them side by side.

Examples::

    sapa compare --quick --out runs/quick                 # the whole pipeline in ~1-2 minutes
    sapa compare --out runs/compare                       # bilinear, sapa-b, sapa-g x 5 seeds
    sapa compare --out runs/compare --resume              # continue an interrupted comparison
    sapa compare --task depth --quick --out runs/depth    # another task (--task T --help: its options)
    sapa compare --upsamplers bilinear sapa-b:kernel_size=7 --out runs/k7
    torchrun --nproc_per_node 8 -m sapa compare --out runs/ddp   # one process per GPU

The task (``--task``, a ``sapa.tasks.base.Task``) supplies data, model, loss, inference,
metrics, table columns and figures; this module and ``trainer`` supply everything else.
Writes into ``--out``: ``results.json`` (``{"config", "environment", "command", "wall_s",
"rows", "summary"}``, one row per finished run; ``summary``: ``sapa.experiments.stats``),
``results.md`` (mean ± std over seeds, and the differences to ``--baseline`` with their 95%
intervals), ``curves.png``, the task's figures and ``runs/<upsampler>-seed<k>/checkpoint.pt``;
``.sapa-compare.lock`` while it runs (``sapa.experiments.files``).

User mistakes end with one line and exit status 2 (``sapa.errors.UsageError``), Ctrl-C with
the command that resumes and exit status 130; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import math
import numbers
import os
import shlex
import sys
import textwrap
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from ..errors import UsageError, usage_message
from ..ops import dispatch
from ..tasks import get_task, list_tasks
from ..tasks.base import PRESET_KEYS, Task
from . import distributed as D
from . import stats
from .checkpoints import config_differences, load_checkpoint
from .figures import draw_all
from .files import (
    OutLock,
    atomic_write_json,
    atomic_write_text,
    check_out_dir,
    make_out_dir,
    write_errors,
)
from .presets import PRESETS
from .results import (
    RESULTS_JSON,
    RESULTS_MD,
    check_rows,
    environment,
    load_results,
    results_markdown,
)
from .specs import run_name, split_upsamplers
from .trainer import TrainConfig, format_metric, train_run

DESCRIPTION = "train one model of a task per upsampler and seed, report them side by side"
DEFAULT_TASK = "segmentation"
# row keys the harness writes; a task's metric may not use them
ROW_KEYS = ("task", "upsampler", "seed", "params", "flops", "train_s", "iters", "world_size",
            "device", "threads", "torch", "backend", "checkpoint")
EXIT_USAGE, EXIT_INTERRUPTED = 2, 130

EXAMPLES = """examples:
  sapa compare --quick --out runs/quick       # bilinear vs sapa-b, 1 seed: a minute or two
  sapa compare --out runs/compare             # bilinear, sapa-b, sapa-g x 5 seeds
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
    p.add_argument("--baseline", metavar="SPEC",
                   help="the upsampler every other one is compared with, seed by seed, in "
                        "results.md and results.json (default: the first of --upsamplers)")
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
                        "when it starts several processes). The numbers depend on it (torch's "
                        "CPU kernels split their sums by thread): every row records it, and "
                        "the same seed and --threads reproduce a row bit for bit")
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
    baseline = upsamplers[0] if args.baseline is None else args.baseline
    if baseline not in upsamplers:
        raise UsageError(f"--baseline {baseline!r} is not one of --upsamplers "
                         f"({' '.join(upsamplers)})")
    check_out_dir(args.out)
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
            "train": train, "out": args.out, "resume": args.resume, "baseline": baseline,
            "preset": preset,
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

class _SapaBackends(TorchDispatchMode):
    """Records which backend runs every ``torch.ops.sapa.*`` call it sees: the op's
    ``backend`` argument, or for ``"auto"`` what ``sapa.ops.dispatch`` chooses for the op's
    tensors (as the op itself does when it runs)."""

    def __init__(self):
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "sapa":
            names = [a.name for a in func._schema.arguments]
            backend = kwargs.get("backend")
            if backend is None and "backend" in names and names.index("backend") < len(args):
                backend = args[names.index("backend")]
            if backend == dispatch.AUTO:
                tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
                family = "sampled" if func._schema.name.split("::")[-1].startswith("sampled") \
                    else "window"
                backend = dispatch.choose_backend(*tensors, family=family).NAME
            if backend is not None:
                self.names.add(str(backend))
        return func(*args, **kwargs)


def profile_forward(model: torch.nn.Module, example) -> tuple[int, str | None]:
    """``(flops, backend)`` of ``model(example)`` in eval mode: FLOPs from
    ``torch.utils.flop_counter`` (2 per multiply-add) and the op backends that ran
    ``torch.ops.sapa.*`` (``"numba"``, ``"lean"``, ``"triton"``, several joined by ``+``; ``None``
    when the model calls none: a run's numbers depend on it only through those ops)."""
    was_training = model.training
    model.eval()
    counter, backends = FlopCounterMode(display=False), _SapaBackends()
    with counter, backends, torch.no_grad():
        model(example)
    model.train(was_training)
    return int(counter.get_total_flops()), "+".join(sorted(backends.names)) or None


def count_flops(model: torch.nn.Module, example) -> int:
    """FLOPs of ``model(example)`` in eval mode (``torch.utils.flop_counter``, 2 per
    multiply-add)."""
    return profile_forward(model, example)[0]


def run_dir(out: str, upsampler: str, seed: int) -> str:
    return os.path.join(out, "runs", run_name(upsampler, seed))


def _checkpoint_path(out: str, upsampler: str, seed: int) -> str:
    return os.path.join(run_dir(out, upsampler, seed), "checkpoint.pt")


def _run_checkpoints(out: str) -> list[str]:
    return sorted(glob.glob(os.path.join(glob.escape(out), "runs", "*", "checkpoint.pt")))


def _prepare_out(settings) -> tuple[list, float]:
    """Rank 0: check ``--out`` against ``--resume``; ``(finished rows, wall seconds of the
    earlier sessions)``. ``UsageError`` when ``--out`` holds a comparison this command may
    not continue.

    Without ``--resume`` an ``--out`` with finished rows, or with checkpoints of unfinished
    runs, is refused; an earlier start that left neither (it failed before its first
    checkpoint) does not count. With ``--resume`` the settings must match those recorded, and
    every checkpoint this command would continue is checked up front."""
    out, config, task = settings["out"], settings["config"], settings["task"]
    path = os.path.join(out, RESULTS_JSON)
    data = load_results(path)
    rows = data["rows"] if data else []
    ckpts = _run_checkpoints(out)
    if not settings["resume"]:
        if rows:
            raise UsageError(f"--out {out} holds an earlier comparison ({len(rows)} finished "
                             "run(s)); pass --resume to continue it or choose another --out")
        if ckpts:
            raise UsageError(f"--out {out} holds checkpoints of unfinished runs of an earlier "
                             f"start ({os.path.relpath(ckpts[0], out)}"
                             f"{', ...' if len(ckpts) > 1 else ''}): pass --resume to continue "
                             f"them, or delete {os.path.join(out, 'runs')} to start afresh")
        return [], 0.0
    if rows:
        old = {"task": DEFAULT_TASK, **data.get("config", {})}  # before --task, every run was this
        diff = config_differences(old, config)
        if diff:
            raise UsageError("--resume: this command's settings differ from those of the "
                             f"comparison in {out}: " + "; ".join(diff))
        check_rows(rows, task.columns, path, task.primary)
    done = {(r["upsampler"], r["seed"]) for r in rows}
    for u in settings["upsamplers"]:
        for s in settings["seeds"]:
            path = _checkpoint_path(out, u, s)
            if (u, s) not in done and os.path.exists(path):
                load_checkpoint(path, upsampler=u, seed=s, config=config)
    wall = data.get("wall_s") if data else None
    return rows, float(wall) if isinstance(wall, (int, float)) else 0.0


def _write_results(settings, rows, env, command, wall_s: float):
    out, task = settings["out"], settings["task"]
    summary = stats.summarize(rows, [c.key for c in task.columns], settings["baseline"],
                              settings["upsamplers"])
    data = {"config": settings["config"], "environment": env, "command": command,
            "wall_s": round(wall_s, 1), "rows": rows, "summary": summary}
    atomic_write_json(os.path.join(out, RESULTS_JSON), data)
    md = results_markdown(data, task.columns, settings["upsamplers"], task.table_note)
    if settings.get("preset") is not None:
        md = md.rstrip("\n") + "\n\n" + settings["preset"].markdown(data) + "\n"
    atomic_write_text(os.path.join(out, RESULTS_MD), md)


def _row(task: Task, upsampler: str, seed: int, final: dict, model, example, ctx, ckpt: str) -> dict:
    """The ``results.json`` row of a finished run: its identity, every float metric, cost,
    what pins its numbers (device, threads, torch, op backend), the meter's non-float extras,
    the checkpoint."""
    metrics = final["metrics"]
    clash = sorted(set(metrics) & set(ROW_KEYS))
    if clash:
        raise TypeError(f"task {task.name!r}: metric names {clash} clash with the row's own keys")
    floats = {k: float(v) if math.isfinite(v) else None  # NaN: undefined on these data
              for k, v in metrics.items() if isinstance(v, numbers.Real) and not isinstance(v, bool)}
    missing = [c.key for c in task.columns if c.key not in floats]
    if missing:
        raise TypeError(f"task {task.name!r}: the meter computed no float for columns {missing}")
    flops, backend = profile_forward(model, example)
    return {
        "task": task.name, "upsampler": upsampler, "seed": seed, **floats,
        "params": sum(p.numel() for p in model.parameters()),
        "flops": flops,
        "train_s": round(final["train_s"], 2),
        "iters": final["iter"], "world_size": ctx.world_size, "device": str(ctx.device.type),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "backend": backend,
        **{k: v for k, v in metrics.items() if k not in floats},
        "checkpoint": ckpt,
    }


class _Session:
    """Rank 0's hold on ``--out`` for one command: the lock, and what to undo if the command
    fails before it has finished a run (so that a failed start never blocks the next one)."""

    def __init__(self, out: str):
        self.out = out
        self.created = False  # this command created --out
        self.owns = False  # --out passed the checks: its results files are this command's
        self.lock: OutLock | None = None

    def open(self, command: str) -> None:
        self.created = make_out_dir(self.out)
        self.lock = OutLock(self.out)
        self.lock.acquire(command)
        note = self.lock.describe_stale()
        if note:
            print(f"sapa compare: {note}", flush=True)

    def close(self, failed: bool, rows: list) -> None:
        """Release the lock; after a failure with no finished row and no checkpoint, remove
        what this command wrote (``results.json``, ``results.md``, empty folders)."""
        if failed and self.owns and not rows and not _run_checkpoints(self.out):
            for name in (RESULTS_JSON, RESULTS_MD):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.out, name))
            for d in sorted(glob.glob(os.path.join(glob.escape(self.out), "runs", "*")),
                            reverse=True) + [os.path.join(self.out, "runs")]:
                with contextlib.suppress(OSError):
                    os.rmdir(d)  # empty folders only
        if self.lock is not None:
            self.lock.release()
        if failed and self.created:
            with contextlib.suppress(OSError):
                os.rmdir(self.out)


def run(settings: dict, ctx: D.DistContext) -> list[dict]:
    """Run every pending ``(upsampler, seed)``; return all rows (rank 0's view).

    Rank 0 holds ``--out``'s lock throughout; if the command fails before it has finished a
    run (and left no checkpoint), what it wrote is removed, so the next command starts
    cleanly."""
    out, train_cfg = settings["out"], settings["train"]
    if train_cfg.batch_size % ctx.world_size:
        raise UsageError(f"--batch-size {train_cfg.batch_size} must be divisible by the number "
                         f"of processes ({ctx.world_size})")
    tic = time.perf_counter()
    command = _command()
    session = _Session(out) if ctx.is_main else None
    err, rows, wall_before = None, [], 0.0
    if session is not None:
        try:
            session.open(command)
            rows, wall_before = _prepare_out(settings)
            session.owns = True
        except UsageError as exc:
            err = usage_message(exc)
    err, rows = D.broadcast_object(ctx, (err, rows))
    failed = True
    try:
        if err:
            raise UsageError(err)
        rows = _run_pending(settings, ctx, rows, command, lambda: wall_before + time.perf_counter() - tic)
        failed = False
    finally:
        if session is not None:
            session.close(failed, rows)
    return rows


def _run_pending(settings, ctx, rows, command, wall) -> list[dict]:
    task, out, config, train_cfg = settings["task"], settings["out"], settings["config"], settings["train"]
    train_set, val_set = task.build_datasets(config)  # fails on bad --data before anything is written
    env = environment()
    env["world_size"] = ctx.world_size
    if ctx.is_main:
        _write_results(settings, rows, env, command, wall())

    done = {(r["upsampler"], r["seed"]) for r in rows}
    todo = [(u, s) for u in settings["upsamplers"] for s in settings["seeds"] if (u, s) not in done]
    if ctx.is_main:
        print(f"sapa compare --task {task.name}: {len(todo)} run(s) to do, {len(done)} finished, "
              f"in {out}", flush=True)
    outer = tqdm(todo, desc="runs", dynamic_ncols=True, disable=not ctx.is_main or None)
    for upsampler, seed in outer:
        ckpt_path = _checkpoint_path(out, upsampler, seed)
        ckpt = None
        if ctx.is_main and settings["resume"] and os.path.exists(ckpt_path):
            ckpt = load_checkpoint(ckpt_path, upsampler=upsampler, seed=seed, config=config)
        ckpt = D.broadcast_object(ctx, ckpt)
        if ckpt is not None and ctx.is_main:
            print(f"  {upsampler} seed {seed}: resuming at step {ckpt['iter']}", flush=True)
        torch.manual_seed(seed)
        model = task.build_model(config, upsampler, train_set)
        final = train_run(task, model, train_set, val_set, config, train_cfg, ctx, seed=seed,
                          ckpt_path=ckpt_path, checkpoint=ckpt, desc=f"{upsampler} s{seed}",
                          upsampler=upsampler)
        if ctx.is_main:
            model.load_state_dict(final["model"])
            rows.append(_row(task, upsampler, seed, final, model,
                             task.example_input(config, ctx.device), ctx,
                             os.path.relpath(ckpt_path, out)))
            _write_results(settings, rows, env, command, wall())
            shown = "  ".join(format_metric(task, final["metrics"], c.key) for c in task.columns)
            print(f"  {upsampler} seed {seed}: {shown}  ({final['train_s']:.0f} s)", flush=True)
        D.barrier(ctx)
    outer.close()
    if ctx.is_main and settings["figures"]:
        with write_errors(out):
            write_figures(settings, train_set, val_set, ctx.device)
    if ctx.is_main:
        _write_results(settings, rows, env, command, wall())
    D.barrier(ctx)
    return rows


def write_figures(settings, train_set, val_set, device) -> list[str]:
    """Draw the figures from the runs' checkpoints (the first seed's model per upsampler)."""
    task, out, config = settings["task"], settings["out"], settings["config"]
    models, curves = {}, {}
    for u in settings["upsamplers"]:
        for s in settings["seeds"]:
            path = _checkpoint_path(out, u, s)
            if not os.path.exists(path):
                continue
            ck = load_checkpoint(path, upsampler=u, seed=s)
            curves.setdefault(u, []).append(ck["curves"])
            if u not in models:
                m = task.build_model(config, u, train_set)
                m.load_state_dict(ck["model"])
                models[u] = m.to(device).eval()
    paths = draw_all(out, task, models, curves, val_set, device)
    print("sapa compare: wrote " + ", ".join(os.path.basename(p) for p in paths), flush=True)
    return paths


def _error(exc: UsageError) -> int:
    print(f"sapa compare: error: {usage_message(exc)}", file=sys.stderr)
    return EXIT_USAGE


def _interrupted(settings) -> int:
    """What Ctrl-C prints: how to continue (or that nothing was kept)."""
    out = settings["out"]
    try:
        data = load_results(os.path.join(out, RESULTS_JSON))
    except UsageError:
        data = None
    rows = len(data["rows"]) if data else 0
    if rows or _run_checkpoints(out):
        cmd = _command()
        if "--resume" not in shlex.split(cmd):
            cmd += " --resume"
        print(f"sapa compare: interrupted ({rows} run(s) finished, checkpoints kept in {out}); "
              f"continue with:\n  {cmd}", file=sys.stderr, flush=True)
    else:
        print("sapa compare: interrupted before anything was saved; run the same command "
              "again to start", file=sys.stderr, flush=True)
    return EXIT_INTERRUPTED


def main(args: argparse.Namespace) -> int:
    """Run the comparison ``args`` asks for. A ``UsageError`` (bad option, data or ``--out``)
    is printed as one line and returns 2; Ctrl-C prints how to resume and returns 130; any
    other exception propagates with its traceback."""
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
    except KeyboardInterrupt:
        return _interrupted(settings) if ctx.is_main else EXIT_INTERRUPTED
    finally:
        D.teardown(ctx)
    if ctx.is_main:
        print(f"sapa compare: done in {time.perf_counter() - tic:.0f} s; "
              f"{os.path.join(settings['out'], RESULTS_MD)}", flush=True)
        with open(os.path.join(settings["out"], RESULTS_MD)) as f:
            text = f.read()
        print(text.split("\n\n")[1])  # the table of means
        print("\n".join(line for line in text.split("\n") if line.startswith("- ")))
    return 0
