"""``sapa compare --preset NAME``: a named grid of upsamplers for one task, and the extra table
``results.md`` gets for it (shaped like the paper's)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .table6 import table6_markdown, table6_specs


@dataclass(frozen=True)
class Preset:
    """A comparison the paper makes: which task, which upsamplers, and how to print it.

    Attributes:
        name: the ``--preset`` value.
        task: the ``--task`` it is defined for.
        upsamplers: the specs it runs (what ``--upsamplers`` would list).
        help: one line for ``--help``.
        markdown: ``results.json``'s data -> the section appended to ``results.md``.
    """

    name: str
    task: str
    upsamplers: tuple[str, ...]
    help: str
    markdown: Callable[[dict], str]


def _table6(data: dict) -> str:
    cfg = data.get("config", {})
    model = cfg.get("model", "?")
    if cfg.get("segformer_size"):
        model = f"{model} {cfg['segformer_size']}"
    return ("## Table 6 (the paper: SegFormer-B1 on ADE20K, mIoU; here: "
            f"{model} on {cfg.get('data', '?')} data)\n\n" + table6_markdown(data["rows"]))


PRESETS = {
    "table6": Preset("table6", "segmentation", tuple(table6_specs()),
                     "Table 6's ablation: similarity I/B/P/G, embedding dim 16-128, normaliser, "
                     "kernel size 3/5/7 (13 SAPA variants; use with --model segformer)",
                     _table6),
}
