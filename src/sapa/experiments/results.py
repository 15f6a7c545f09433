"""Results of a comparison: ``results.json`` (reading it back, checking its rows) and
``results.md`` (the tables).

``results.json`` holds ``{"config", "environment", "command", "wall_s", "rows", "summary"}``:
one row per finished ``(upsampler, seed)`` run, and the statistics over seeds of every
tabulated metric (``sapa.experiments.stats.summarize``: per upsampler mean and std, and the
difference to the baseline, paired by seed, with a 95% t-interval). ``results.md`` shows the
task's ``Column``s twice: mean ± std over seeds (the best mean of each column in bold), and the
paired differences to the baseline with their intervals, "within noise" where an interval
contains 0; then one line per column saying which upsamplers are better, worse or within
noise. Both files are written atomically (``sapa.experiments.files``).
"""
from __future__ import annotations

import importlib.metadata
import json
import math
import numbers
import os
import platform

import torch

from ..errors import UsageError
from . import stats

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
# versions recorded next to every result (distribution names; absent ones are recorded as None)
LIBRARIES = ("torch", "numpy", "scipy", "numba", "triton", "torchvision", "timm", "pillow")


# ---- reading results.json back ---------------------------------------------------------------

def load_results(path: str, columns=None) -> dict | None:
    """The parsed ``results.json`` at ``path``, or ``None`` if there is none.

    With ``columns`` (the task's ``Column``s) its rows are checked too (``check_rows``).

    Raises:
        UsageError: the file cannot be read, is not JSON, is not a ``sapa compare`` results
            file, or (with ``columns``) holds a malformed row; the message names the file.
    """
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}, line {exc.lineno} column {exc.colno}: not valid JSON "
                         f"({exc.msg}); restore the file or choose another --out") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list) \
            or not isinstance(data.get("config", {}), dict):
        raise UsageError(f"{path} is not a sapa compare results file (no 'rows' list)")
    if columns is not None:
        check_rows(data["rows"], columns, path)
    return data


def _real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def check_rows(rows: list, columns, path: str = RESULTS_JSON, primary: str | None = None) -> None:
    """``UsageError`` naming ``path`` and the row unless every row has an ``upsampler``
    (a non-empty string), a ``seed`` (an int >= 0), for every column's key a finite number
    (or ``None``: undefined on the data, except for the ``primary`` metric), ``params`` and
    ``flops`` (ints >= 0) and ``train_s`` (a number >= 0), and no ``(upsampler, seed)``
    appears twice: what a hand-edited file may get wrong."""
    seen = set()
    for i, r in enumerate(rows, 1):
        where = f"{path}: row {i}"
        if not isinstance(r, dict):
            raise UsageError(f"{where} is not an object: restore the file or remove the row")
        if isinstance(r.get("upsampler"), str) and isinstance(r.get("seed"), int):
            where += f" ({r['upsampler']} seed {r['seed']})"
        problems = []
        if not isinstance(r.get("upsampler"), str) or not r["upsampler"]:
            problems.append(f"'upsampler' must be a non-empty string, got {r.get('upsampler')!r}")
        seed = r.get("seed")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            problems.append(f"'seed' must be an int >= 0, got {seed!r}")
        for c in columns:
            v = r.get(c.key)
            if not (_real(v) or (v is None and c.key in r and c.key != primary)):
                problems.append(f"{c.key!r} must be a finite number, got {v!r}")
        for key in ("params", "flops"):
            v = r.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                problems.append(f"{key!r} must be an int >= 0, got {v!r}")
        if not _real(r.get("train_s")) or r["train_s"] < 0:
            problems.append(f"'train_s' must be a number >= 0, got {r.get('train_s')!r}")
        if problems:
            raise UsageError(f"{where}: {'; '.join(problems)}; restore the file or remove the "
                             "row (--resume then adds it again from the run's checkpoint)")
        ident = (r["upsampler"], r["seed"])
        if ident in seen:
            raise UsageError(f"{where}: a second row for {ident[0]} seed {ident[1]}; remove one")
        seen.add(ident)


# ---- what pins the numbers -------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions() -> dict:
    """``{distribution: version or None}`` for ``LIBRARIES`` (read from the installed
    metadata, without importing them) and ``sapa``."""
    out = {}
    for name in (*LIBRARIES, "sapa"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    out["torch"] = torch.__version__
    return out


def source_revision() -> str | None:
    """The git commit of the ``sapa`` source that runs (``+dirty`` with uncommitted changes to
    tracked files), or ``None`` outside a git checkout: ``sapa``'s version number alone does
    not pin its code."""
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=10, check=False)
        if rev.returncode:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
                               cwd=os.path.dirname(here), capture_output=True, text=True,
                               timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def environment() -> dict:
    """Machine, thread count, library versions and the source revision, recorded next to
    every result."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "libraries": library_versions(),
        "sapa_revision": source_revision(),
    }


# ---- tables ----------------------------------------------------------------------------------

def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _num(v: float, c, sign: bool = False) -> str:
    return f"{v * c.scale:{'+' if sign else ''}.{c.digits}f}"


def markdown_table(rows: list[dict], columns, order: list[str] | None = None,
                   summary: dict | None = None) -> str:
    """The means as a Markdown table: one ``sapa.tasks.base.Column`` per metric (mean ± sample
    std over seeds, scaled; the best mean in bold when there are several upsamplers), then
    parameters, GFLOPs per image and training seconds per run (mean ± std)."""
    summary = summary or stats.summarize(rows, [c.key for c in columns], order=order)
    per = summary["upsamplers"]
    head = ["upsampler", "seeds", *(c.header for c in columns), "params", "GFLOPs", "train s / run"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    best = {}
    for c in columns:
        means = [round(s[c.key]["mean"] * c.scale, c.digits) for s in per.values()
                 if s[c.key]["mean"] is not None]
        if len(per) > 1 and means:
            best[c.key] = min(means) if c.lower_is_better else max(means)
    for name, s in per.items():
        rs = [r for r in rows if r["upsampler"] == name]
        cells = [_cell(name), str(len(rs))]
        for c in columns:
            m = s[c.key]
            if m["mean"] is None:
                cells.append("—")  # undefined on these data for every seed
                continue
            text = _num(m["mean"], c)
            if best.get(c.key) == round(m["mean"] * c.scale, c.digits):
                text = f"**{text}**"
            cells.append(f"{text} ± {_num(m['std'], c)}" + ("" if m["n"] == len(rs) else
                                                            f" (n={m['n']})"))
        t = stats.metric_summary(rows, name, name, "train_s")
        cells += [f"{rs[0]['params']:,}", f"{rs[0]['flops'] / 1e9:.3f}",
                  f"{t['mean']:.0f} ± {t['std']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _arrow(c) -> str:
    return "↓" if c.lower_is_better else "↑"


def difference_cell(m: dict, c) -> str:
    """``+d [low, high]`` (scaled) with ``within noise`` where the interval contains 0,
    ``+d (n=1)`` without an interval, ``—`` without a common seed."""
    if m["diff"] is None:
        return "—"
    if m["ci_low"] is None:
        return f"{_num(m['diff'], c, True)} (n=1)"
    text = f"{_num(m['diff'], c, True)} [{_num(m['ci_low'], c, True)}, {_num(m['ci_high'], c, True)}]"
    return f"{text} within noise" if m["within_noise"] else text


def differences_table(summary: dict, columns) -> str:
    """Every non-baseline upsampler's paired difference to the baseline, per column."""
    base = summary["baseline"]
    head = ["upsampler", "pairs", *(f"Δ {c.header} {_arrow(c)}" for c in columns)]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, per in summary["upsamplers"].items():
        if name == base:
            continue
        pairs = per[columns[0].key]["pairs"]
        lines.append("| " + " | ".join([_cell(name), str(pairs),
                                        *(difference_cell(per[c.key], c) for c in columns)]) + " |")
    return "\n".join(lines)


def conclusions(summary: dict, columns) -> list[str]:
    """One Markdown bullet per column: which upsamplers are better than the baseline, worse,
    within noise, or measured with one seed only (in the column's direction)."""
    base = summary["baseline"]
    out = []
    for c in columns:
        groups = {"better": [], "worse": [], "within noise": [], "one seed only (n=1)": []}
        for name, per in summary["upsamplers"].items():
            m = per[c.key]
            if name == base or m["diff"] is None:
                continue
            if m["ci_low"] is None:
                groups["one seed only (n=1)"].append(f"{name} {_num(m['diff'], c, True)}")
                continue
            cell = f"{name} {difference_cell(m, c).removesuffix(' within noise')}"
            if m["within_noise"]:
                groups["within noise"].append(cell)
            else:
                up = m["diff"] > 0
                groups["worse" if up == c.lower_is_better else "better"].append(cell)
        parts = [f"{k}: {', '.join(v)}" for k, v in groups.items() if v]
        if parts:
            direction = "lower is better" if c.lower_is_better else "higher is better"
            out.append(f"- {c.header} ({direction}), against {base}: " + "; ".join(parts) + ".")
    return out


def statistics_note(summary: dict) -> str:
    conf = round(100 * summary["confidence"])
    return (f"Δ: the upsampler minus {summary['baseline']}, seed by seed, averaged over the "
            f"seeds both ran (pairs), with its {conf}% confidence interval: Student's t "
            "interval for a paired mean difference (scipy.stats.t, pairs - 1 degrees of "
            "freedom). \"within noise\": the interval contains 0, so these seeds do not "
            "resolve a difference; n=1: one pair, no interval.")


def results_markdown(data: dict, columns, order: list[str] | None = None, note: str = "") -> str:
    """``results.md``: the tables, what they show (``note``: the task's metrics), how they were
    made. Uses ``data["summary"]`` (computed from the rows if absent)."""
    cfg, env = data.get("config", {}), data.get("environment", {})
    rows = data["rows"]
    summary = data.get("summary") or stats.summarize(rows, [c.key for c in columns], order=order)
    parts = [f"# sapa compare --task {cfg.get('task', '?')}", "",
             markdown_table(rows, columns, order, summary), "",
             (note + " " if note else "") +
             "Mean ± sample standard deviation over seeds (over n of them where a metric is "
             "undefined for the others; —: undefined for all); bold: the best mean of the column. "
             "GFLOPs: one forward pass of one input (`torch.utils.flop_counter`, 2 FLOPs per "
             "multiply-add). train s: wall-clock training time of one run (evaluation "
             "excluded), on the machine below.", ""]
    if len(summary["upsamplers"]) > 1:
        parts += [f"## Differences to {summary['baseline']}", "",
                  differences_table(summary, columns), "", statistics_note(summary), "",
                  *conclusions(summary, columns), ""]
    wall = data.get("wall_s")
    parts += [f"Command: `{data.get('command', '')}`", ""]
    if wall is not None:
        parts += [(f"Wall clock: {wall / 60:.1f} min in all (every session of this "
                   f"comparison, with {env.get('torch_threads', '?')} thread(s) per process)."),
                  ""]
    parts += ["Configuration: " + ", ".join(f"{k}={v}" for k, v in cfg.items() if v is not None),
              "",
              "Environment: " + ", ".join(
                  f"{k}={' '.join(f'{n} {v}' for n, v in val.items() if v)}"
                  if isinstance(val, dict) else f"{k}={val}" for k, val in env.items()), ""]
    return "\n".join(parts)
