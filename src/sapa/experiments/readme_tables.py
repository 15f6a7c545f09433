"""Result tables in the documentation, generated from ``results.json`` files, never copied by hand.

A Markdown file (the README, ``docs/*.md``) marks each generated block::

    <!-- sapa-results: docs/results/segmentation/results.json -->
    ... generated: do not edit ...
    <!-- /sapa-results -->

The path is relative to the Markdown file's folder. The block is regenerated from that
``results.json`` (a ``sapa compare`` output committed under ``docs/results/<task>/``): a line
saying how it was made (command, seeds, threads, device, versions, wall clock), the table of
means ± std, the paired differences to the baseline with their 95% intervals, and one line per
metric saying which upsamplers are better, worse or within noise (``sapa.experiments.results``).
An optional ``show=`` after the path picks parts: ``show=means,differences,conclusions,how``.

    python -m sapa.experiments.readme_tables                  # rewrite README.md and docs/*.md
    python -m sapa.experiments.readme_tables --check          # exit 1 if any block is stale
    python -m sapa.experiments.readme_tables --check FILE...  # other files

``--check`` also fails on a results table outside a block (a Markdown table whose header is the
one ``sapa compare`` writes, ``| upsampler | seeds | ...``), i.e. numbers copied by hand.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import sys

from ..errors import UsageError, usage_message
from ..tasks import get_task
from . import stats
from .results import (
    check_rows,
    conclusions,
    differences_table,
    load_results,
    markdown_table,
    statistics_note,
)

BEGIN = re.compile(r"^<!-- sapa-results: (?P<path>\S+)(?: show=(?P<show>[a-z,]+))? -->$")
END = "<!-- /sapa-results -->"
PARTS = ("how", "means", "differences", "conclusions")
RESULTS_TABLE_HEADER = re.compile(r"^\|\s*upsampler\s*\|\s*seeds\s*\|")


def provenance(data: dict) -> str:
    """One line: the command, seeds, threads, device, versions, machine and wall clock."""
    rows, env = data["rows"], data.get("environment", {})
    threads = sorted({r["threads"] for r in rows if "threads" in r}) or [env.get("torch_threads", "?")]
    devices = sorted({r.get("device", "?") for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    machine = env.get("cuda") if "cuda" in devices and env.get("cuda") else env.get("cpu", "?")
    parts = [f"`{data.get('command', '?')}`", f"seeds {' '.join(map(str, seeds))}",
             f"{'/'.join(map(str, threads))} thread(s) per process", f"device {'/'.join(devices)}",
             f"{machine} ({env.get('cpu_count', '?')} cores)", f"torch {env.get('torch', '?')}"]
    if env.get("sapa_revision"):
        parts.append(f"sapa {env['sapa_revision'][:12]}")
    if data.get("wall_s") is not None:
        parts.append(f"{data['wall_s'] / 60:.1f} min wall clock")
    return "Made by " + ", ".join(parts) + "."


def render(data: dict, show: tuple[str, ...] = PARTS, source: str = "results.json") -> str:
    """The generated text of one block for the parsed ``results.json`` ``data`` (read from
    ``source``, which error messages name)."""
    task = get_task(data.get("config", {}).get("task", "segmentation"))
    rows, cols = data["rows"], task.columns
    if not rows:
        raise UsageError(f"{source} has no rows: nothing to tabulate")
    check_rows(rows, cols, source, task.primary)
    base = (data.get("summary") or {}).get("baseline")
    summary = stats.summarize(rows, [c.key for c in cols], base)
    out = []
    if "how" in show:
        out.append(provenance(data))
    if "means" in show:
        out.append(markdown_table(rows, cols, summary=summary))
    if "differences" in show and len(summary["upsamplers"]) > 1:
        out += [differences_table(summary, cols), statistics_note(summary)]
    if "conclusions" in show and len(summary["upsamplers"]) > 1:
        lines = conclusions(summary, cols)
        if lines:
            out.append("\n".join(lines))
    return "\n\n".join(out)


def _fenced(lines: list[str]) -> set[int]:
    """Indices of the lines inside fenced code blocks (examples, not content)."""
    inside, fence = set(), None
    for n, line in enumerate(lines):
        mark = line.strip()[:3]
        if fence is None and mark in ("```", "~~~"):
            fence = mark
            inside.add(n)
        elif fence is not None:
            inside.add(n)
            if mark == fence:
                fence = None
    return inside


def _blocks(lines: list[str], path: str):
    """``(begin, end, results_path, show)`` line indices of every block of a Markdown file
    (outside fenced code)."""
    fenced = _fenced(lines)
    i = 0
    while i < len(lines):
        m = None if i in fenced else BEGIN.match(lines[i].strip())
        if m:
            try:
                j = next(k for k in range(i + 1, len(lines)) if lines[k].strip() == END)
            except StopIteration:
                raise UsageError(f"{path}, line {i + 1}: a sapa-results block without "
                                 f"{END}") from None
            show = tuple(m["show"].split(",")) if m["show"] else PARTS
            unknown = sorted(set(show) - set(PARTS))
            if unknown:
                raise UsageError(f"{path}, line {i + 1}: show= takes {', '.join(PARTS)}, "
                                 f"got {', '.join(unknown)}")
            yield i, j, m["path"], show
            i = j
        i += 1


def regenerate(path: str) -> tuple[str, str, list[str]]:
    """``(old text, new text, problems)`` of the Markdown file ``path``: every block
    regenerated, and ``problems``: results tables outside the blocks (``file, line N``)."""
    with open(path, encoding="utf-8") as f:
        old = f.read()
    lines = old.split("\n")
    new_lines, last, problems = [], 0, []
    inside = set()
    for begin, end, rel, show in _blocks(lines, path):
        source = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), rel))
        try:
            data = load_results(source)
            if data is None:
                raise UsageError(f"{source} does not exist")
            text = render(data, show, source)
        except UsageError as exc:
            raise UsageError(f"{path}, line {begin + 1}: {usage_message(exc)}") from None
        new_lines += lines[last:begin + 1] + ["", text, ""] + [lines[end]]
        inside.update(range(begin, end + 1))
        last = end + 1
    new_lines += lines[last:]
    skip = inside | _fenced(lines)
    problems = [f"{path}, line {n + 1}: a results table outside a sapa-results block (numbers "
                "copied by hand?)" for n, line in enumerate(lines)
                if n not in skip and RESULTS_TABLE_HEADER.match(line)]
    return old, "\n".join(new_lines), problems


def default_files(root: str = ".") -> list[str]:
    return [p for p in [os.path.join(root, "README.md"),
                        *sorted(glob.glob(os.path.join(glob.escape(root), "docs", "*.md")))]
            if os.path.isfile(p)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sapa.experiments.readme_tables",
                                description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="*", help="Markdown files (default: README.md and docs/*.md)")
    p.add_argument("--check", action="store_true",
                   help="change nothing; exit 1 if a block is stale or a results table is "
                        "outside a block")
    args = p.parse_args(argv)
    files = args.files or default_files()
    stale, problems = [], []
    try:
        for path in files:
            old, new, bad = regenerate(path)
            problems += bad
            if new != old:
                if args.check:
                    stale.append(path)
                else:
                    with open(path, "w", encoding="utf-8") as f:
                        f.write(new)
                    print(f"rewrote {path}")
    except UsageError as exc:
        print(f"readme_tables: error: {usage_message(exc)}", file=sys.stderr)
        return 2
    for line in problems:
        print(line, file=sys.stderr)
    for path in stale:
        print(f"{path}: generated results are stale; run python -m sapa.experiments.readme_tables",
              file=sys.stderr)
    return 1 if stale or problems else 0


if __name__ == "__main__":
    sys.exit(main())
