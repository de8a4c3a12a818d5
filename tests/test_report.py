"""Results table, seed aggregation and Pareto plot on hand-written rows."""

from __future__ import annotations

import json
import statistics

import matplotlib.image
import pytest

from quads.commands.report import (
    aggregate_seeds,
    format_mean_std,
    read_results,
    results_markdown,
    row_order,
    significant,
    write_results,
)
from quads.errors import DataError


def row(method, bits, accuracy, *, seed=None, size=None, params=7_250_000, f1=None):
    result = {
        "method": method, "bits": bits, "params": params,
        "size_bytes": size if size is not None else (None if method == "teacher" else params * bits // 8 + 1000),
        "theoretical_bytes": params * bits // 8, "gmacs": 0.52, "gmacs_30s": 15.6,
        "accuracy": accuracy, "f1": accuracy - 0.01 if f1 is None else f1,
        "model_file": None if method == "teacher" else f"{method}-{bits}.quads",
    }
    if seed is not None:
        result["seed"] = seed
    return result


# Deliberately shuffled: the table must put them in the paper's order.
ROWS = [
    row("QUADS", 4, 0.97), row("PTQ", 8, 0.95), row("teacher", 32, 0.99, params=19_850_000),
    row("sequential", 4, 0.93), row("QUADS", 8, 0.98), row("PTQ", 4, 0.80), row("student fp32", 32, 0.985),
    row("sequential", 8, 0.96),
]
EXPECTED_ORDER = [("teacher", 32), ("student fp32", 32), ("PTQ", 8), ("sequential", 8), ("QUADS", 8),
                  ("PTQ", 4), ("sequential", 4), ("QUADS", 4)]


def table_lines(markdown):
    return [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| method")]


def test_write_results_writes_json_that_round_trips_markdown_and_a_png(tmp_path):
    paths = write_results(ROWS, tmp_path / "report", "FSC, synthetic")
    assert {path.name for path in paths.values()} == {"results.json", "results.md", "pareto.png"}
    assert json.loads(paths["results.json"].read_text()) == ROWS
    assert read_results(paths["results.json"]) == ROWS
    image = matplotlib.image.imread(paths["pareto.png"])
    assert image.ndim == 3 and image.shape[0] >= 400 and image.shape[1] >= 600
    assert paths["results.md"].read_text().startswith("# FSC, synthetic\n")


def test_table_has_one_line_per_row_references_first_then_methods_by_bit_width():
    lines = table_lines(results_markdown(ROWS, "t"))
    assert [(cells[0], int(cells[1])) for cells in (line.strip("| ").split(" | ") for line in lines)] == EXPECTED_ORDER
    assert [(r["method"], r["bits"]) for r in row_order(ROWS)] == EXPECTED_ORDER


def test_table_cells_use_paper_units_megabytes_of_2_20_and_percent():
    (line,) = table_lines(results_markdown([row("teacher", 32, 0.9949, params=19_850_000, size=79_400_000,
                                                f1=0.9944)], "t"))
    cells = line.strip("| ").split(" | ")
    assert cells[:4] == ["teacher", "32", "19.9", "75.7"]  # Whisper-base in the paper: 75.7 MB
    assert cells[-2:] == ["99.49", "99.44"]


def test_missing_figures_show_a_dash_not_none():
    (line,) = table_lines(results_markdown([row("teacher", 32, 0.9)], "t"))
    assert "None" not in line and line.split(" | ")[3] == "–"


def test_unknown_methods_follow_the_known_ones_within_their_bit_width():
    rows = [row("my recipe", 4, 0.9), row("QUADS", 4, 0.9), row("PTQ", 4, 0.9)]
    assert [r["method"] for r in row_order(rows)] == ["PTQ", "QUADS", "my recipe"]


def test_aggregate_seeds_gives_mean_and_sample_std_per_method_and_bits():
    rows = [row("QUADS", 4, a, seed=s) for s, a in enumerate((0.970, 0.975, 0.962))]
    rows += [row("PTQ", 4, 0.80, seed=0), row("QUADS", 8, 0.98, seed=0), row("QUADS", 8, 0.99, seed=1)]
    aggregated = aggregate_seeds(rows)
    assert [(r["method"], r["bits"], r["n_seeds"]) for r in aggregated] == [("QUADS", 4, 3), ("PTQ", 4, 1),
                                                                           ("QUADS", 8, 2)]
    quads4 = aggregated[0]
    assert quads4["accuracy_mean"] == pytest.approx(statistics.mean([0.970, 0.975, 0.962]))
    assert quads4["accuracy_std"] == pytest.approx(statistics.stdev([0.970, 0.975, 0.962]))
    assert quads4["f1_mean"] == pytest.approx(statistics.mean([0.960, 0.965, 0.952]))
    assert quads4["accuracy"] == quads4["accuracy_mean"] and quads4["seeds"] == [0, 1, 2]
    assert quads4["params"] == 7_250_000 and quads4["size_bytes"] == rows[0]["size_bytes"]
    assert aggregated[1]["accuracy_std"] == 0.0
    assert aggregated[2]["accuracy_std"] == pytest.approx(0.0070711, abs=1e-6)


def test_aggregated_table_renders_mean_plus_minus_std_and_seed_counts():
    rows = [row("QUADS", 4, 0.967, seed=0), row("QUADS", 4, 0.975, seed=1), row("teacher", 32, 0.99)]
    markdown = results_markdown(aggregate_seeds(rows), "t")
    teacher, quads = table_lines(markdown)
    assert quads.endswith("| 97.1 ± 0.6 | 96.1 ± 0.6 | 2 |")
    assert teacher.endswith("| 99.0 | 98.0 | 1 |")  # one run: no spread to show
    assert format_mean_std(0.971, 0.004) == "97.1 ± 0.4"


def test_a_seed_listed_twice_for_the_same_method_and_bits_is_refused():
    with pytest.raises(DataError, match=r"QUADS at 4 bits.*\[0\]"):
        aggregate_seeds([row("QUADS", 4, 0.9, seed=0), row("QUADS", 4, 0.91, seed=0)])


def test_accuracy_given_in_percent_instead_of_a_fraction_is_refused():
    with pytest.raises(DataError, match=r"row 1 \(PTQ\): accuracy must be a fraction"):
        results_markdown([row("QUADS", 4, 0.9), row("PTQ", 4, 97.0)], "t")


def test_a_row_without_a_required_key_is_named(tmp_path):
    broken = row("QAT", 2, 0.5)
    del broken["gmacs_30s"]
    path = tmp_path / "results.json"
    path.write_text(json.dumps([broken]))
    with pytest.raises(DataError, match=r"results\.json: row 0 \(QAT\): missing gmacs_30s"):
        read_results(path)


def test_significant_keeps_three_figures_without_scientific_notation():
    assert [significant(v) for v in (2422.4, 75.73, 6.914, 0.05312, 0.0, None)] == [
        "2422", "75.7", "6.91", "0.0531", "0", "–"]


def test_plot_copes_with_a_teacher_of_unknown_size_and_aggregated_rows(tmp_path):
    rows = aggregate_seeds([row("teacher", 32, 0.99), row("QUADS", 2, 0.9, seed=0), row("QUADS", 2, 0.92, seed=1)])
    paths = write_results(rows, tmp_path, "aggregated")
    assert matplotlib.image.imread(paths["pareto.png"]).ndim == 3
