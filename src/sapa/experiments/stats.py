"""Statistics over seeds: per-upsampler mean and spread, and paired differences to a baseline
with a confidence interval.

A comparison runs every upsampler with the same seeds; a seed fixes the data order and the
initial weights of the parts the models share, so the runs of two upsamplers with the same
seed are *paired*. For an upsampler ``u``, a baseline ``b`` and a metric, the per-seed
differences ``d_s = u_s - b_s`` over the seeds both ran give

- ``diff``: their mean ``d̄``;
- the 95% **paired t-interval** ``d̄ ± t_{0.975, n-1} · s_d / √n`` (``s_d`` the sample standard
  deviation of the ``d_s``, ``t`` Student's quantile with ``n - 1`` degrees of freedom,
  ``scipy.stats.t``): the usual interval for the mean of a paired difference, which assumes the
  ``d_s`` are independent draws from a normal distribution;
- ``within_noise``: whether the interval contains 0, i.e. the seeds do not resolve a
  difference at this confidence.

With one pair there is no interval (``n=1``); the baseline's own entry has ``diff = 0`` and no
interval. Every value is in the metric's own unit (unscaled).
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

CONFIDENCE = 0.95
METHOD = ("paired t-interval over seeds: mean of the per-seed differences to the baseline "
          "± Student's t quantile (n-1 degrees of freedom) x their sample std / sqrt(n)")


def t_quantile(p: float, dof: int) -> float:
    """Student's t quantile ``t_{p, dof}`` (``scipy.stats.t.ppf``)."""
    from scipy.stats import t

    return float(t.ppf(p, dof))


def paired_interval(diffs: Sequence[float], confidence: float = CONFIDENCE
                    ) -> tuple[float, float | None, float | None]:
    """``(mean, low, high)`` of the two-sided ``confidence`` t-interval for the mean of the
    paired differences ``diffs``; ``low = high = None`` for a single difference.

    Raises:
        ValueError: ``diffs`` is empty or holds a non-finite value; ``confidence`` not in (0, 1).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    diffs = [float(d) for d in diffs]
    if not diffs or not all(math.isfinite(d) for d in diffs):
        raise ValueError(f"diffs must be a non-empty list of finite numbers, got {diffs!r}")
    mean = math.fsum(diffs) / len(diffs)
    if len(diffs) == 1:
        return mean, None, None
    half = t_quantile(0.5 + confidence / 2, len(diffs) - 1) * statistics.stdev(diffs) \
        / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean (exactly rounded, ``math.fsum``) and sample standard deviation (0 for one value)
    of a non-empty sequence."""
    if not values:
        raise ValueError("mean_std needs at least one value")
    vals = [float(v) for v in values]
    return math.fsum(vals) / len(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def _values(rows: Iterable[dict], upsampler: str, key: str) -> dict[int, float]:
    """Seed -> value of ``key`` for ``upsampler``'s rows where it is defined (not ``None``)."""
    return {r["seed"]: float(r[key]) for r in rows
            if r["upsampler"] == upsampler and r.get(key) is not None}


def metric_summary(rows: list[dict], upsampler: str, baseline: str, key: str,
                   confidence: float = CONFIDENCE) -> dict:
    """``{"n", "mean", "std", "pairs", "diff", "ci_low", "ci_high", "within_noise"}`` of metric
    ``key`` for ``upsampler`` (which must have a row) against ``baseline``.

    ``n``, ``mean``, ``std`` (sample; 0 for one seed) are over ``upsampler``'s seeds where the
    metric is defined (a row may hold ``None`` for a metric that is undefined on its data, e.g.
    a COCO AP of an area range without objects; with no defined value ``mean`` and ``std`` are
    ``None``); ``pairs`` counts the seeds both ran (with defined values), over which ``diff``
    and the interval are taken (``diff`` is ``None`` without a common seed, ``0.0`` for the
    baseline itself); ``within_noise`` is ``None`` where there is no interval.
    """
    own = _values(rows, upsampler, key)
    vals = list(own.values())
    mean, std = mean_std(vals) if vals else (None, None)
    out = {"n": len(vals), "mean": mean, "std": std,
           "pairs": 0, "diff": None, "ci_low": None, "ci_high": None, "within_noise": None}
    if not vals:
        return out
    base = _values(rows, baseline, key)
    seeds = sorted(set(own) & set(base))
    out["pairs"] = len(seeds)
    if upsampler == baseline:
        out["diff"] = 0.0
    elif seeds:
        diff, low, high = paired_interval([own[s] - base[s] for s in seeds], confidence)
        out.update(diff=diff, ci_low=low, ci_high=high,
                   within_noise=None if low is None else bool(low <= 0.0 <= high))
    return out


def order_upsamplers(rows: list[dict], order: Sequence[str] | None = None) -> list[str]:
    """``order``'s upsamplers that have rows, then the others in first-seen order."""
    names = [u for u in (order or []) if any(r["upsampler"] == u for r in rows)]
    for r in rows:
        if r["upsampler"] not in names:
            names.append(r["upsampler"])
    return names


def summarize(rows: list[dict], keys: Sequence[str], baseline: str | None = None,
              order: Sequence[str] | None = None, confidence: float = CONFIDENCE) -> dict:
    """The ``summary`` section of ``results.json``::

        {"baseline", "confidence", "method",
         "upsamplers": {name: {key: metric_summary(...) for key in keys}}}

    ``baseline`` defaults to the first upsampler (of ``order_upsamplers``); while it has no
    row (yet), every other upsampler's ``diff`` is ``None``.
    """
    names = order_upsamplers(rows, order)
    if baseline is None:
        baseline = names[0] if names else None
    return {
        "baseline": baseline, "confidence": confidence, "method": METHOD,
        "upsamplers": {u: {k: metric_summary(rows, u, baseline, k, confidence) for k in keys}
                       for u in names},
    }
