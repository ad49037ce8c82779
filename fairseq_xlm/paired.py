"""Paired comparisons of arms over seeds (``make replicate``): mean ± sample std, the paired t-test with its 95 %
confidence interval, and the verdict on an expected ordering of several arms."""

import math
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for one value)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_std of no values")
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var)


@dataclass
class Paired:
    """A paired comparison of arm B against arm A over the seeds both have."""

    n: int
    diff: float  # mean of B - A
    half_width: float  # of the 95 % confidence interval of the mean difference (t distribution, n - 1 dof)
    p: float  # two-sided p-value of the paired t-test (1.0 when undefined)


def paired_t(a: Sequence[float], b: Sequence[float]) -> Paired:
    """Paired t-test of ``b - a`` (the same seeds, in the same order)."""
    from scipy import stats

    if len(a) != len(b):
        raise ValueError(f"paired_t: {len(a)} and {len(b)} values")
    diffs = [y - x for x, y in zip(a, b)]
    n = len(diffs)
    if n < 2:
        return Paired(n, diffs[0] if diffs else float("nan"), float("inf"), 1.0)
    mean, sd = mean_std(diffs)
    se = sd / math.sqrt(n)
    half = float(stats.t.ppf(0.975, n - 1)) * se
    if se == 0:
        return Paired(n, mean, 0.0, 0.0 if mean != 0 else 1.0)
    p = 2 * float(stats.t.sf(abs(mean / se), n - 1))
    return Paired(n, mean, half, p)


def better(measure: str) -> str:
    """'lower' for perplexities, 'higher' for everything else (accuracies, BLEU, shares, P@1)."""
    return "lower" if "ppl" in measure else "higher"


def fmt(x: float) -> str:
    """One decimal from 10 up, two below (table cells)."""
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def comparison(measure: str, arms: Sequence[str], by_arm: Dict[str, Dict[int, float]]) -> Tuple[str, List[str]]:
    """The verdict over neighbouring arms (``holds`` / ``holds in the means`` / ``no``) and one text per pair
    ``A < B: +d [lo, hi], p`` (difference in the better direction, 95 % CI, paired over common seeds)."""
    sign = -1.0 if better(measure) == "lower" else 1.0
    verdicts, texts = [], []
    for lo, hi in zip(arms, arms[1:]):
        seeds = sorted(set(by_arm.get(lo, {})) & set(by_arm.get(hi, {})))
        if not seeds:
            texts.append(f"{lo} < {hi}: no common seeds")
            verdicts.append("missing")
            continue
        t = paired_t([sign * by_arm[lo][s] for s in seeds], [sign * by_arm[hi][s] for s in seeds])
        significant = t.diff > 0 and t.diff - t.half_width > 0
        verdicts.append("significant" if significant else ("mean" if t.diff > 0 else "no"))
        ci = f"[{fmt(t.diff - t.half_width)}, {fmt(t.diff + t.half_width)}]" if t.n > 1 else "(one seed)"
        texts.append(f"{hi} vs {lo}: {'+' if t.diff >= 0 else ''}{fmt(t.diff)} {ci}, p={t.p:.2f}")
    if "missing" in verdicts:
        verdict = "incomplete"
    elif all(v == "significant" for v in verdicts):
        verdict = "holds"
    elif all(v in ("significant", "mean") for v in verdicts):
        verdict = "holds in the means"
    else:
        verdict = "no"
    return verdict, texts
