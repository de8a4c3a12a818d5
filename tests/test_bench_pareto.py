"""The report of bench/bench_pareto.py: which files are on the size/accuracy frontier and which is the smallest
that reaches the target on both sets."""

import importlib.util
from pathlib import Path

SPEC = importlib.util.spec_from_file_location("bench_pareto", Path(__file__).parents[1] / "bench" / "bench_pareto.py")
bench_pareto = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench_pareto)


def row(student: str, bits: int, size: int, test: float, fsdd: float) -> dict:
    return {"student": student, "method": "QUADS", "bits": bits, "params": 1000, "gmacs": 0.01, "size_bytes": size,
            "test_accuracy": test, "fsdd_accuracy": fsdd}


def test_the_frontier_keeps_the_files_no_smaller_one_beats_on_the_worse_of_their_two_accuracies():
    rows = [row("a", 2, 10_000, 0.80, 0.70), row("a", 4, 20_000, 0.60, 0.95), row("b", 2, 30_000, 0.92, 0.91),
            row("b", 4, 40_000, 0.93, 0.90)]
    assert bench_pareto.frontier(rows) == {0, 2}
    teachers = [{"for": name, "test_accuracy": 0.95, "fsdd_accuracy": 0.9} for name in ("a", "b")]
    report = bench_pareto.pareto_markdown(rows, teachers)
    assert "Smallest file with >= 90% on both: b QUADS 2-bit, 30,000 bytes." in report
    assert report.count("| yes |") == 2 and report.count("| teacher (for a, b) |") == 1


def test_the_report_says_so_when_no_file_reaches_the_target():
    report = bench_pareto.pareto_markdown([row("a", 2, 10_000, 0.95, 0.85)], [])
    assert "No file reaches 90% on both sets." in report
    assert bench_pareto.pareto_png([row("a", 2, 10_000, 0.95, 0.85)]).startswith(b"\x89PNG")


def test_the_fsdd_benches_say_where_they_looked_when_the_recordings_are_missing(tmp_path):
    from quads.commands.fsdd import fsdd_not_found

    assert fsdd_not_found(tmp_path, []) is None
    looked = [tmp_path / "a", tmp_path / "b"]
    assert fsdd_not_found(None, looked) == (f"skipped: no FSDD recordings; looked in {looked[0]}, {looked[1]} "
                                            "(set QUADS_SHARED_DATA or --fsdd)")
    assert f"looked in {tmp_path / 'x'} " in fsdd_not_found(tmp_path / "x", looked)
