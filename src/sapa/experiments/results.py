"""Results of a comparison: atomic JSON / text writes and the summary table.

``results.json`` holds ``{"config": {...}, "environment": {...}, "rows": [...]}``, one row
per finished ``(upsampler, seed)`` run; ``results.md`` tabulates the task's ``Column``s (mean
± std over seeds, the best mean of each column in bold). Every write goes to a temporary file in the same
directory and is moved over the old one with ``os.replace``, so a reader (or a run killed
mid-write) sees either the old file or the new one, never a torn one.
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import tempfile

import torch

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"


def _temp_beside(path: str) -> tuple[int, str]:
    """A temporary file in ``path``'s folder, with the permissions a new file would get
    (``mkstemp`` makes it private)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=os.path.basename(path) + ".", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return fd, tmp


def atomic_write_bytes(path: str, data: bytes) -> None:
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(path: str, obj) -> None:
    """``torch.save`` through a temporary file and ``os.replace``."""
    fd, tmp = _temp_beside(path)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_results(path: str) -> dict | None:
    """The parsed ``results.json``, or ``None`` if there is none."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ValueError(f"{path} is not a sapa compare results file (no 'rows' list)")
    return data


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """Machine and versions, recorded next to every result."""
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import sapa

        env["sapa"] = sapa.__version__
    except ImportError:  # pragma: no cover
        pass
    return env


def _mean_std(values):
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(rows: list[dict], keys, order: list[str] | None = None) -> list[dict]:
    """One dict per upsampler (in ``order``, else first-seen order): ``n`` seeds, ``params``,
    ``flops`` and the mean and standard deviation (``<key>_std``, sample, 0 for one seed) of
    every metric in ``keys`` and of ``train_s``."""
    names = list(order or [])
    for r in rows:
        if r["upsampler"] not in names:
            names.append(r["upsampler"])
    out = []
    for name in names:
        rs = [r for r in rows if r["upsampler"] == name]
        if not rs:
            continue
        s = {"upsampler": name, "n": len(rs), "params": rs[0]["params"], "flops": rs[0]["flops"]}
        for key in (*keys, "train_s"):
            s[key], s[key + "_std"] = _mean_std([r.get(key) for r in rs])
        out.append(s)
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(rows: list[dict], columns, order: list[str] | None = None) -> str:
    """The summary as a Markdown table: one ``sapa.tasks.base.Column`` per metric (mean ± std
    over seeds, scaled; the best mean in bold when there are several upsamplers), then
    parameters, GFLOPs per image and training seconds per run."""
    head = ["upsampler", "seeds", *(c.header for c in columns), "params", "GFLOPs", "train s / run"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    summary = summarize(rows, [c.key for c in columns], order)
    best = {}
    for c in columns:
        means = [round(s[c.key] * c.scale, c.digits) for s in summary if not math.isnan(s[c.key])]
        if len(summary) > 1 and means:
            best[c.key] = min(means) if c.lower_is_better else max(means)
    for s in summary:
        cells = [_cell(s["upsampler"]), str(s["n"])]
        for c in columns:
            mean, std = s[c.key], s[c.key + "_std"]
            if math.isnan(mean):
                cells.append("—")
                continue
            text = f"{mean * c.scale:.{c.digits}f}"
            if best.get(c.key) == round(mean * c.scale, c.digits):
                text = f"**{text}**"
            cells.append(f"{text} ± {std * c.scale:.{c.digits}f}")
        cells += [f"{s['params']:,}", f"{s['flops'] / 1e9:.3f}",
                  f"{s['train_s']:.0f} ± {s['train_s_std']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_markdown(data: dict, columns, order: list[str] | None = None, note: str = "") -> str:
    """``results.md``: the table, what it shows (``note``: the task's metrics), how it was made."""
    cfg, env = data.get("config", {}), data.get("environment", {})
    parts = [
        f"# sapa compare --task {cfg.get('task', '?')}",
        "",
        markdown_table(data["rows"], columns, order),
        "",
        (note + " " if note else "") +
        "Mean ± sample standard deviation over seeds; bold: the best mean of the column. "
        "GFLOPs: one forward pass of one input (`torch.utils.flop_counter`, 2 FLOPs per "
        "multiply-add). train s: wall-clock training time of one run (evaluation excluded), "
        "on the machine below.",
        "",
        f"Command: `{data.get('command', '')}`",
        "",
        "Configuration: " + ", ".join(f"{k}={v}" for k, v in cfg.items() if v is not None),
        "",
        "Environment: " + ", ".join(f"{k}={v}" for k, v in env.items()),
        "",
    ]
    return "\n".join(parts)
