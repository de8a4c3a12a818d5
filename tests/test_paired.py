"""QUADS − sequential paired by seed: per-seed differences, mean, std and the paired tests' p-values."""

import pytest
from scipy import stats

from quads.commands.paired import paired_differences, paired_markdown


def rows_for(quads: dict[int, float], sequential: dict[int, float], bits: int) -> list[dict]:
    return ([{"method": "QUADS", "bits": bits, "seed": s, "accuracy": a} for s, a in quads.items()]
            + [{"method": "sequential", "bits": bits, "seed": s, "accuracy": a} for s, a in sequential.items()])


def test_differences_are_paired_by_seed_with_scipy_p_values():
    quads = {0: 0.80, 1: 0.75, 2: 0.90, 3: 0.70, 4: 0.85}
    sequential = {0: 0.78, 1: 0.70, 2: 0.89, 3: 0.66, 4: 0.80, 5: 0.99}  # seed 5 has no QUADS partner
    rows = rows_for(quads, sequential, 2) + rows_for({0: 0.9, 1: 0.9}, {0: 0.9, 1: 0.9}, 4)
    rows.append({"method": "PTQ", "bits": 2, "seed": 0, "accuracy": 0.1})
    two, four = sorted(paired_differences(rows), key=lambda r: r["bits"])
    assert two["seeds"] == [0, 1, 2, 3, 4]
    expected = [0.02, 0.05, 0.01, 0.04, 0.05]
    assert two["differences"] == pytest.approx(expected)
    assert two["mean"] == pytest.approx(0.034)
    assert two["std"] == pytest.approx(stats.tstd(expected))
    assert two["t_test_p"] == pytest.approx(stats.ttest_rel(list(quads.values()), list(sequential.values())[:5]).pvalue)
    assert two["wilcoxon_p"] == pytest.approx(stats.wilcoxon(expected).pvalue)
    assert two["t_test_p"] < 0.05  # five seeds, all positive: significant
    assert four["mean"] == 0 and four["wilcoxon_p"] is None and four["t_test_p"] is None
    table = paired_markdown([two, four])
    assert "| 2 | 5 |" in table and "+3.40" in table


def test_a_single_seed_has_no_std_and_no_p_value():
    (result,) = paired_differences(rows_for({0: 0.8}, {0: 0.7}, 4))
    assert result["mean"] == pytest.approx(0.1) and result["std"] is None and result["t_test_p"] is None


def test_no_common_bit_width_gives_no_rows():
    assert paired_differences(rows_for({0: 0.8}, {}, 4)) == []
    assert "no paired comparison" in paired_markdown([])


def test_paired_fsdd_rows_pair_on_the_real_speech_metric_and_the_table_names_each_seed():
    from quads.commands.fsdd import fsdd_markdown

    rows = [{"method": "teacher", "bits": 32, "accuracy": 0.97, "fsdd_accuracy": 0.9, "fsdd_f1": 0.9}]
    for seed, (ours, theirs) in enumerate([(0.70, 0.60), (0.72, 0.65)]):
        rows += [{"method": "QUADS", "bits": 2, "seed": seed, "accuracy": 0.8, "fsdd_accuracy": ours, "fsdd_f1": 0},
                 {"method": "sequential", "bits": 2, "seed": seed, "accuracy": 0.8, "fsdd_accuracy": theirs,
                  "fsdd_f1": 0}]
    (result,) = paired_differences(rows, key="fsdd_accuracy")
    assert result["metric"] == "fsdd_accuracy" and result["differences"] == pytest.approx([0.10, 0.07])
    assert paired_differences(rows)[0]["differences"] == [0.0, 0.0]  # the synthetic metric: no difference
    table = fsdd_markdown(rows)
    assert "| QUADS (seed 1) | 2 |" in table and "| teacher | 32 |" in table
    assert "(seed" not in fsdd_markdown(rows[:3])  # one seed: no seed labels


def test_against_a_fixed_width_compares_every_width_with_the_float_control():
    from quads.commands.grid import EQUAL_BUDGET_DISTILL

    rows = rows_for({0: 0.85, 1: 0.80}, {}, 4) + rows_for({0: 0.70, 1: 0.72}, {}, 2)
    rows += [{"method": EQUAL_BUDGET_DISTILL, "bits": 32, "seed": seed, "accuracy": accuracy}
             for seed, accuracy in {0: 0.84, 1: 0.82}.items()]
    four, two = paired_differences(rows, second=EQUAL_BUDGET_DISTILL, against_bits=32)
    assert (four["bits"], four["second_bits"], two["bits"]) == (4, 32, 2)
    assert four["differences"] == pytest.approx([0.01, -0.02]) and two["differences"] == pytest.approx([-0.14, -0.10])
    assert paired_differences(rows, second=EQUAL_BUDGET_DISTILL) == []  # no control at 4 or 2 bits
    assert paired_differences(rows, second=EQUAL_BUDGET_DISTILL, against_bits=16) == []
    assert f"QUADS − {EQUAL_BUDGET_DISTILL} at 32 bits" in paired_markdown([four, two])
    assert "at 32 bits" not in paired_markdown(paired_differences(rows_for({0: 0.8}, {0: 0.7}, 4)))
