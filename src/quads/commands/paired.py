"""The one comparison the paper is about, answered with a paired test: QUADS − sequential, seed by seed.

Both recipes start from the same distilled student of each seed, so their accuracies are paired: the spread
between seeds (a lucky split of the student's initialisation) cancels in the difference. For every bit width
where both recipes have rows, `paired_differences` lists the per-seed differences with their mean, sample std
and two paired tests from `scipy.stats`: the Wilcoxon signed-rank test (no normality assumption) and the
paired t-test. With fewer than 2 seeds (or all differences zero) the p-values are None.

The same test answers the budget question: QUADS at each width against the float student trained as many epochs
(`against_bits=32`, `second` = `quads.commands.grid.EQUAL_BUDGET_DISTILL`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

PAIRED_METHODS = ("QUADS", "sequential")


def paired_differences(rows: Sequence[dict[str, Any]], first: str = PAIRED_METHODS[0],
                       second: str = PAIRED_METHODS[1], key: str = "accuracy",
                       against_bits: int | None = None) -> list[dict[str, Any]]:
    """One entry per bit width where both methods have rows: the seeds both ran, `first - second` per seed,
    mean, std (sample; None for one seed), Wilcoxon and paired-t p-values (two-sided). With `against_bits`,
    every width of `first` is compared with `second` at that one width (e.g. a float control at 32)."""
    by_method: dict[tuple[str, int], dict[int, float]] = {}
    for row in rows:
        if row.get("method") in (first, second) and row.get("seed") is not None and row.get(key) is not None:
            by_method.setdefault((row["method"], row["bits"]), {})[int(row["seed"])] = float(row[key])
    first_widths = {bits for method, bits in by_method if method == first}
    second_widths = {bits for method, bits in by_method if method == second}
    if against_bits is None:
        widths = sorted(first_widths & second_widths, reverse=True)
    else:
        widths = sorted(first_widths, reverse=True) if against_bits in second_widths else []
    results = []
    for bits in widths:
        second_bits = bits if against_bits is None else against_bits
        ours, theirs = by_method[(first, bits)], by_method[(second, second_bits)]
        seeds = sorted(ours.keys() & theirs.keys())
        differences = [ours[seed] - theirs[seed] for seed in seeds]
        results.append({"bits": bits, "first": first, "second": second, "second_bits": second_bits,
                        "metric": key, "seeds": seeds, "differences": differences, **_summary(differences)})
    return results


def _summary(differences: list[float]) -> dict[str, Any]:
    n = len(differences)
    mean = sum(differences) / n if n else None
    std = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1)) if n > 1 else None
    wilcoxon_p = t_test_p = None
    if n > 1 and any(d != 0 for d in differences):
        from scipy import stats

        wilcoxon_p = float(stats.wilcoxon(differences, zero_method="wilcox").pvalue)
        # every seed gaining the same non-zero amount makes the t statistic infinite: p = 0
        t_test_p = float(stats.ttest_1samp(differences, 0.0).pvalue) if std else 0.0
    return {"mean": mean, "std": std, "wilcoxon_p": wilcoxon_p, "t_test_p": t_test_p}


def paired_markdown(results: Sequence[dict[str, Any]]) -> str:
    """The paired table, differences in accuracy points (percent)."""
    if not results:
        return "No bit width has rows of both methods: no paired comparison."
    first, second, metric = results[0]["first"], results[0]["second"], results[0]["metric"]
    fixed = {result["second_bits"] for result in results if result["second_bits"] != result["bits"]}
    if fixed:
        second += f" at {fixed.pop()} bits"
    lines = [f"{first} − {second}, {metric} in points, paired by seed", "",
             "| bits | seeds | per-seed difference | mean | std | Wilcoxon p | paired t p |",
             "|---|---|---|---|---|---|---|"]

    def points(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:+.2f}"

    def p_value(value: float | None) -> str:
        return "–" if value is None else f"{value:.3g}"

    for result in results:
        per_seed = ", ".join(f"s{seed}: {points(d)}" for seed, d in zip(result["seeds"], result["differences"],
                                                                         strict=True))
        std = "–" if result["std"] is None else f"{100 * result['std']:.2f}"
        lines.append(f"| {result['bits']} | {len(result['seeds'])} | {per_seed} | {points(result['mean'])} | {std} | "
                     f"{p_value(result['wilcoxon_p'])} | {p_value(result['t_test_p'])} |")
    return "\n".join(lines)
