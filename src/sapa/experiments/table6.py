"""SAPA's Table 6 (ablation on SegFormer-B1, ADE20K mIoU) as a grid of upsampler specs, and
the Table-6-shaped markdown of a comparison's rows with the paper's numbers beside them.

Every setting varies one choice of the default SAPA-B (bilinear similarity, ``d = 32``,
``h = exp``, i.e. softmax, ``K = 5``), so the four groups share that one run:

- similarity: I, B, P (plain addition), G;
- embedding dimension ``d``: 16, 32, 64, 128;
- normaliser ``h``: none, ``exp``, relu, sigmoid, softplus;
- kernel size ``K``: 3, 5, 7.

That is 13 distinct upsamplers. Specs are written ``name:option=value,...`` (the syntax of
``sapa.build_upsampler``'s specs; the options are ``sapa.SAPA``'s).
"""
from __future__ import annotations

from dataclasses import dataclass

from .stats import mean_std


@dataclass(frozen=True)
class Setting:
    """One column of Table 6."""

    group: str  # the column group, as the paper heads it
    label: str  # the column, as the paper heads it
    spec: str  # the upsampler spec that runs it
    paper: float  # the paper's mIoU (%)


DEFAULT = "sapa-b"
TABLE6 = (
    Setting("Sim func", "I", "sapa-i", 43.1),
    Setting("Sim func", "B", DEFAULT, 43.2),
    Setting("Sim func", "P", "sapa-p", 43.2),
    Setting("Sim func", "G", "sapa-g", 44.4),
    Setting("Embedding dim", "16", "sapa-b:embed_dim=16", 43.0),
    Setting("Embedding dim", "32", DEFAULT, 43.2),
    Setting("Embedding dim", "64", "sapa-b:embed_dim=64", 43.2),
    Setting("Embedding dim", "128", "sapa-b:embed_dim=128", 43.4),
    Setting("Norm func", "None", "sapa-b:normalizer=none", 41.5),
    Setting("Norm func", "eˣ", DEFAULT, 43.2),
    Setting("Norm func", "relu", "sapa-b:normalizer=relu", 40.8),
    Setting("Norm func", "sigmoid", "sapa-b:normalizer=sigmoid", 42.8),
    Setting("Norm func", "softplus", "sapa-b:normalizer=softplus", 42.7),
    Setting("Kernel size", "3", "sapa-b:kernel_size=3", 43.1),
    Setting("Kernel size", "5", DEFAULT, 43.2),
    Setting("Kernel size", "7", "sapa-b:kernel_size=7", 42.5),
)
# the paper prints the table in two blocks of two groups each
BLOCKS = (("Sim func", "Embedding dim"), ("Norm func", "Kernel size"))


def table6_specs() -> list[str]:
    """The distinct upsampler specs of Table 6, in the table's order (13)."""
    out: list[str] = []
    for s in TABLE6:
        if s.spec not in out:
            out.append(s.spec)
    return out


def _cell(values, scale, digits) -> str:
    if not values:
        return "—"
    mean, std = mean_std(values)
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def table6_markdown(rows: list[dict], metric: str = "miou", metric_header: str = "mIoU (%)",
                    scale: float = 100.0, digits: int = 1) -> str:
    """Table 6's two blocks, each with the paper's SegFormer-B1 mIoU and ours (mean ± sample
    std over seeds of ``row[metric] * scale``, and the number of seeds) per setting.

    Args:
        rows: result rows, each with ``upsampler`` (a spec of ``table6_specs()``) and
            ``metric``; rows of other upsamplers (a bilinear reference, ...) are listed below
            the table.
        metric, metric_header, scale, digits: which value of a row, how it is headed, scaled
            and rounded.
    """
    by_spec: dict[str, list[float]] = {}
    for r in rows:
        if r.get(metric) is not None:
            by_spec.setdefault(r["upsampler"], []).append(r[metric])
    lines = []
    for block in BLOCKS:
        cols = [s for g in block for s in TABLE6 if s.group == g]
        groups = " | ".join(f"{g} ({', '.join(s.label for s in cols if s.group == g)})" for g in block)
        lines += [f"SegFormer-B1 ablation: {groups}", "",
                  "| Setting | " + " | ".join(s.label for s in cols) + " |",
                  "|---|" + "---:|" * len(cols),
                  "| paper mIoU (%) | " + " | ".join(f"{s.paper:.1f}" for s in cols) + " |",
                  f"| ours {metric_header} | "
                  + " | ".join(_cell(by_spec.get(s.spec, []), scale, digits) for s in cols) + " |",
                  "| seeds | " + " | ".join(str(len(by_spec.get(s.spec, []))) for s in cols) + " |",
                  ""]
    others = [u for u in by_spec if u not in table6_specs()]
    if others:
        lines += ["Other upsamplers in these results (not in Table 6):", ""]
        lines += [f"- {u}: {_cell(by_spec[u], scale, digits)} (seeds: {len(by_spec[u])})"
                  for u in others]
        lines.append("")
    return "\n".join(lines).rstrip("\n")
