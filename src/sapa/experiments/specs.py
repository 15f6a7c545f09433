"""Upsampler specs on the command line: ``--upsamplers`` entries, their validation, and the
run folders named after them.

A spec is an upsampler name, optionally with options: ``sapa-b`` or
``sapa-b:normalizer=relu,kernel_size=7``. The harness treats a spec as an opaque string that it
hands to the task (``Task.build_model``); it only checks it here, before any work, and derives
a file-system-safe folder name from it.
"""
from __future__ import annotations

import hashlib
import re

from ..errors import UsageError
from ..modules import list_upsamplers

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME = 80


def split_upsamplers(entries: list[str]) -> list[str]:
    """The specs listed by the ``--upsamplers`` arguments ``entries`` (whitespace-separated on
    the command line). An entry without ``:`` may list several names separated by commas, the
    syntax of earlier versions (``bilinear,sapa-b``); an entry with ``:`` is one spec, whose
    options are comma-separated. Every spec is checked (``check_spec``); a spec listed twice or
    no spec at all is a ``UsageError``."""
    specs = []
    for entry in entries:
        parts = [entry] if ":" in entry else entry.split(",")
        specs += [p.strip() for p in parts if p.strip()]
    if not specs:
        raise UsageError(f"--upsamplers lists no upsampler: {entries!r}")
    twice = sorted({s for s in specs if specs.count(s) > 1})
    if twice:
        raise UsageError(f"--upsamplers lists {', '.join(twice)} twice")
    for spec in specs:
        check_spec(spec)
    return specs


def check_spec(spec: str) -> None:
    """``UsageError`` unless ``sapa.build_upsampler`` would accept ``spec``'s name and options.

    With ``sapa.modules.factory.parse_upsampler_spec`` (specs with options) the spec is parsed
    by it; without it only plain names are accepted."""
    try:
        from ..modules.factory import parse_upsampler_spec
    except ImportError:  # a sapa whose factory takes names only
        parse_upsampler_spec = None
    known = list_upsamplers()
    if parse_upsampler_spec is not None:
        try:
            parse_upsampler_spec(spec)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"--upsamplers: {spec!r}: {exc}") from None
        return
    name, _, options = spec.partition(":")
    if name not in known:
        raise UsageError(f"--upsamplers: unknown name {name!r}; known: {', '.join(known)}")
    if options:
        raise UsageError(f"--upsamplers: {spec!r}: this version of sapa takes upsampler names "
                         "only, without ':options'")


def run_name(spec: str, seed: int) -> str:
    """The run folder of ``(spec, seed)``: ``<spec>-seed<k>`` for a plain name; a spec with
    characters other than letters, digits, ``.``, ``_`` and ``-`` has them replaced by ``_``
    and gets 8 hex digits of its SHA-1, so that different specs never share a folder."""
    safe = _UNSAFE.sub("_", spec)
    if safe != spec or len(safe) > MAX_NAME:
        safe = f"{safe[:MAX_NAME]}-{hashlib.sha1(spec.encode()).hexdigest()[:8]}"
    return f"{safe}-seed{seed}"
