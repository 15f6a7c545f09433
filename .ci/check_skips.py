"""Fail CI on any skipped test but the CUDA-only ones.

Reads the output of ``python -m pytest -rs`` (a file, or ``-`` for standard input) and exits 1
when a skip's reason is not allowed, or when the skip summary cannot be read (no ``-rs``, or its
counts do not add up to the closing line's). A CUDA-only test skips with a reason that starts
with one of ``ALLOWED``; nothing else may skip on a machine with every extra installed.

    python -m pytest -q -rs | tee pytest.log
    python .ci/check_skips.py pytest.log [--allow PREFIX ...]

``--allow`` adds a prefix for one run (the torch-floor run has no Triton, on purpose).
"""
from __future__ import annotations

import argparse
import re
import sys

# the reasons a skip may give, as prefixes: tests that need a CUDA GPU (this is the one list)
ALLOWED = ("needs a CUDA GPU",)

_SKIP = re.compile(r"^SKIPPED \[(\d+)\] (.*?):(\d+): (.*)$")
_CLOSING = re.compile(r"\b(\d+) (?:passed|failed|skipped|errors?|deselected|xfailed|xpassed)\b")


def read_skips(lines: list[str]) -> tuple[list[tuple[int, str, str]], int]:
    """``([(count, location, reason)], skipped)``: the ``-rs`` entries and the closing line's
    number of skipped tests."""
    entries = []
    for line in lines:
        match = _SKIP.match(line.rstrip("\n"))
        if match:
            count, path, lineno, reason = match.groups()
            entries.append((int(count), f"{path}:{lineno}", reason))
    closing = [line for line in lines if _CLOSING.search(line)]
    if not closing:
        raise ValueError("no closing pytest summary line (e.g. '10 passed, 2 skipped in 3.1s')")
    skipped = re.search(r"\b(\d+) skipped\b", closing[-1])
    return entries, int(skipped.group(1)) if skipped else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", help="pytest output with -rs ('-' for standard input)")
    parser.add_argument("--allow", action="append", default=[], metavar="PREFIX",
                        help="also allow skips whose reason starts with PREFIX")
    args = parser.parse_args(argv)
    if args.log == "-":
        lines = sys.stdin.readlines()
    else:
        with open(args.log, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    try:
        entries, skipped = read_skips(lines)
    except ValueError as err:
        print(f"check_skips: {args.log}: {err}", file=sys.stderr)
        return 1
    listed = sum(count for count, _, _ in entries)
    if listed != skipped:
        print(f"check_skips: {args.log}: the closing line counts {skipped} skipped but the "
              f"'SKIPPED [n]' lines list {listed}; run pytest with -rs", file=sys.stderr)
        return 1
    allowed = ALLOWED + tuple(args.allow)
    bad = [(count, where, reason) for count, where, reason in entries
           if not reason.startswith(allowed)]
    for count, where, reason in bad:
        print(f"check_skips: not allowed to skip: [{count}] {where}: {reason}", file=sys.stderr)
    if bad:
        print(f"check_skips: {sum(c for c, _, _ in bad)} skipped test(s) whose reason is not one "
              f"of {list(allowed)}: make them run, or remove them", file=sys.stderr)
        return 1
    print(f"check_skips: {skipped} skipped, all allowed ({', '.join(allowed)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
