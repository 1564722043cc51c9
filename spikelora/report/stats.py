"""Effect sizes with 95 % confidence intervals over seeds, the tests behind them, and verdicts.

Every estimate is over independent runs (seeds), never over steps or examples. Where both
methods share seeds the comparison is paired by seed (paired t and Wilcoxon signed-rank on the
differences); otherwise it is Welch's t and Mann-Whitney U. SciPy does the arithmetic.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
POWER = 0.80
NAN = float("nan")


@dataclass(frozen=True)
class Estimate:
    """Mean effect (relative to ``mu0``), its 95 % CI, the two-sided p of the t test, n."""

    effect: float
    ci_low: float
    ci_high: float
    n: int
    p_value: float
    p_rank: float  # Wilcoxon signed-rank (paired / one-sample) or Mann-Whitney U (unpaired)
    sd: float  # sd of the differences (paired) or pooled sd (unpaired)
    paired: bool = True


def one_sample(values, mu0: float = 0.0) -> Estimate:
    """Mean of ``values - mu0`` with its t interval: paired differences, or a one-sample test."""
    d = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float) - mu0
    n = len(d)
    if n == 0:
        return Estimate(NAN, NAN, NAN, 0, NAN, NAN, NAN)
    effect = float(d.mean())
    if n == 1:
        return Estimate(effect, NAN, NAN, 1, NAN, NAN, NAN)
    sd = float(d.std(ddof=1))
    if sd == 0.0:  # every seed gives the same difference: the interval is that value
        lo = hi = effect
        p = 1.0 if effect == 0 else 0.0
    else:
        res = stats.ttest_1samp(d, 0.0)
        ci = res.confidence_interval(1 - ALPHA)
        lo, hi, p = float(ci.low), float(ci.high), float(res.pvalue)
    try:
        with warnings.catch_warnings():  # ties/zeros: SciPy warns and may return nan
            warnings.simplefilter("ignore", RuntimeWarning)
            p_rank = float(stats.wilcoxon(d).pvalue)
    except ValueError:  # all differences zero
        p_rank = NAN
    return Estimate(effect, lo, hi, n, p, p_rank, sd)


def two_sample(b, a) -> Estimate:
    """Mean of ``b`` minus mean of ``a`` (unpaired), Welch interval."""
    b = np.asarray([v for v in b if v is not None and not math.isnan(v)], dtype=float)
    a = np.asarray([v for v in a if v is not None and not math.isnan(v)], dtype=float)
    n = min(len(a), len(b))
    if n == 0:
        return Estimate(NAN, NAN, NAN, 0, NAN, NAN, NAN, paired=False)
    effect = float(b.mean() - a.mean())
    if len(a) < 2 or len(b) < 2:
        return Estimate(effect, NAN, NAN, n, NAN, NAN, NAN, paired=False)
    sd = float(math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2))
    if sd == 0.0:
        lo = hi = effect
        p = 1.0 if effect == 0 else 0.0
    else:
        res = stats.ttest_ind(b, a, equal_var=False)
        ci = res.confidence_interval(1 - ALPHA)
        lo, hi, p = float(ci.low), float(ci.high), float(res.pvalue)
    try:
        p_rank = float(stats.mannwhitneyu(b, a).pvalue)
    except ValueError:
        p_rank = NAN
    return Estimate(effect, lo, hi, n, p, p_rank, sd, paired=False)


def tost(values, margin: float, mu0: float = 0.0) -> float:
    """Two one-sided t tests of |mean(values − mu0)| < margin: the larger of the two p values."""
    d = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float) - mu0
    if len(d) < 2:
        return NAN
    if float(d.std(ddof=1)) == 0.0:
        return 0.0 if abs(float(d.mean())) < margin else 1.0
    lower = stats.ttest_1samp(d, -margin, alternative="greater").pvalue
    upper = stats.ttest_1samp(d, margin, alternative="less").pvalue
    return float(max(lower, upper))


def n_for_power(effect: float, sd: float, paired: bool = True, margin: float | None = None) -> int | None:
    """Seeds (per method) a two-sided t test at α = 0.05 needs for 80 % power, if the observed
    effect and spread hold. With ``margin`` it is the TOST's n for equivalence within ±margin.
    None when no n would do (zero effect, or an effect beyond the equivalence margin)."""
    if not (math.isfinite(effect) and math.isfinite(sd)) or sd <= 0:
        return None
    gap = (margin - abs(effect)) if margin is not None else abs(effect)
    if gap <= 0:
        return None
    # The normal approximation gives a lower bound; the t test needs a few more seeds than that.
    z = stats.norm.ppf(1 - ALPHA) if margin is not None else stats.norm.ppf(1 - ALPHA / 2)
    n0 = ((z + stats.norm.ppf(POWER)) * sd / gap) ** 2 * (1 if paired else 2)
    if n0 > 1_000_000:  # an effect that is all but zero against its spread (e.g. identical scores)
        return None
    if n0 > 10_000:
        return math.ceil(n0)
    for n in range(max(2, math.floor(n0)), math.ceil(n0) + 100):
        if paired:
            df, se = n - 1, sd / math.sqrt(n)
        else:
            df, se = 2 * n - 2, sd * math.sqrt(2 / n)
        ncp = gap / se
        if margin is not None:  # both one-sided tests at α: power ≈ 2·P(T > t_α − ncp) − 1 (conservative)
            power = 2 * stats.t.sf(stats.t.ppf(1 - ALPHA, df) - ncp, df) - 1
        else:
            crit = stats.t.ppf(1 - ALPHA / 2, df)
            power = stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp)
        if power >= POWER:
            return n
    return math.ceil(n0) + 100


def directional(est: Estimate, sign: int) -> tuple[str, str]:
    """Verdict on "effect has sign ``sign``" from the 95 % CI: (verdict, note)."""
    if est.n == 0:
        return "no data", "no runs of this kind"
    if not (math.isfinite(est.ci_low) and math.isfinite(est.ci_high)):
        return "inconclusive", f"n = {est.n}: at least 2 seeds per method are needed for an interval"
    if (sign > 0 and est.ci_low > 0) or (sign < 0 and est.ci_high < 0):
        return "supported", "the 95 % CI excludes 0 on the claimed side"
    if (sign > 0 and est.ci_high < 0) or (sign < 0 and est.ci_low > 0):
        return "contradicted", "the 95 % CI excludes 0 on the opposite side"
    need = n_for_power(est.effect, est.sd, est.paired)
    what = "seed pairs" if est.paired else "seeds per method"
    if need is None:
        return (
            "inconclusive",
            "the 95 % CI spans 0 and the observed effect is ≈ 0 against its spread: no n would decide it",
        )
    return "inconclusive", (
        f"the 95 % CI spans 0; about {need} {what} would decide it (80 % power, α = 0.05, "
        "if the observed effect and spread hold)"
    )


def equivalence(est: Estimate, p_tost: float, margin: float) -> tuple[str, str]:
    """Verdict on "|effect| < margin" (TOST at α = 0.05)."""
    if est.n == 0:
        return "no data", "no runs of this kind"
    if not math.isfinite(p_tost):
        return "inconclusive", f"n = {est.n}: at least 2 seed pairs are needed for TOST"
    if p_tost < ALPHA:
        return "supported", f"TOST p < {ALPHA}: equivalent within ±{margin:g}"
    if est.ci_high < -margin or est.ci_low > margin:
        return "contradicted", f"the 95 % CI lies outside ±{margin:g}"
    need = n_for_power(est.effect, est.sd, est.paired, margin=margin)
    if need is None:
        return "inconclusive", f"the observed difference is beyond ±{margin:g}: more seeds would not show equivalence"
    return "inconclusive", f"about {need} seed pairs would decide TOST at ±{margin:g} (80 % power, α = 0.05)"
