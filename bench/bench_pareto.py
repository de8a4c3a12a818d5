"""The smallest model that still works: student size x bit width, scored on held-out wordings and on real speech.

For each student, trains the distilled student and QUADS at each width twice, on the built-in corpus and on the
synthetic digits, then scores every packed file: the commands file on the built-in test split (held-out wordings
and voices), the digits file on FSDD's 3,000 real recordings. Students from scratch (`conv-*`, `transformer-*`)
use the small configuration (`--small-config`, default `configs/tiny-conv.yaml`), the others the defaults.

    .venv/bin/python bench/bench_pareto.py --out runs/pareto --students conv-50k conv-200k conv-1m --bits 8 4 3 2

Each student's rows land in OUT/<student>/rows.json, so calls with other students add to the same OUT; every call
rewrites OUT/pareto.md (one row per file, worst of the two accuracies, the files no smaller one beats on it
marked), OUT/pareto.json and OUT/pareto.png (size on disk vs accuracy on both sets). Finished cells are reused.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from quads.atomic import atomic_write_bytes, atomic_write_text
from quads.commands.fsdd import find_fsdd, fsdd_not_found, fsdd_rows
from quads.commands.grid import Cell, run_grid
from quads.config import load_config

SMALL_PREFIXES = ("conv-", "transformer-")
TARGET = 0.90  # the accuracy a file must reach on both sets (issue: "the smallest model that still works")


def student_config(student: str, small_config: Path, overrides: list[str]):
    from_scratch = student.startswith(SMALL_PREFIXES)
    config = load_config(small_config if from_scratch else None, overrides)
    return replace(config, student=replace(config.student, encoder=student))


def student_rows(student: str, config, bits: list[int], out: Path, fsdd: Path) -> list[dict[str, Any]]:
    """One row per trained file: size and built-in test accuracy of the commands file, FSDD of the digits one."""
    cells = [Cell("distill", 32, config.seed)] + [Cell("quads", width, config.seed) for width in bits]
    builtin, _ = run_grid(config, cells, out / "builtin", latency_samples=0)
    digits = fsdd_rows(config, cells, out / "fsdd", fsdd)
    real = {(row["method"], row["bits"]): row for row in digits}
    rows = []
    for row in builtin[1:]:
        twin = real[(row["method"], row["bits"])]
        rows.append({"student": student, "method": row["method"], "bits": row["bits"], "seed": row["seed"],
                     "params": row["params"], "gmacs": row["gmacs"], "size_bytes": row["size_bytes"],
                     "digits_size_bytes": twin["size_bytes"], "test_accuracy": row["accuracy"],
                     "valid_accuracy": row.get("valid_accuracy"), "fsdd_accuracy": twin["fsdd_accuracy"],
                     "digits_test_accuracy": twin["accuracy"], "train_seconds": row.get("train_seconds"),
                     "digits_train_seconds": twin.get("train_seconds")})
    teacher = {"student": "teacher", "method": "teacher", "test_accuracy": builtin[0]["accuracy"],
               "fsdd_accuracy": digits[0]["fsdd_accuracy"]}
    return [teacher, *rows]


def frontier(rows: list[dict[str, Any]]) -> set[int]:
    """Indices of the files no smaller (or equally small) file beats on the worse of its two accuracies."""
    best, chosen = -1.0, set()
    for index in sorted(range(len(rows)), key=lambda i: (rows[i]["size_bytes"], -worst(rows[i]))):
        if worst(rows[index]) > best:
            best = worst(rows[index])
            chosen.add(index)
    return chosen


def worst(row: dict[str, Any]) -> float:
    return min(row["test_accuracy"], row["fsdd_accuracy"])


def pareto_markdown(rows: list[dict[str, Any]], teachers: list[dict[str, Any]]) -> str:
    rows = sorted(rows, key=lambda row: row["size_bytes"])
    front = frontier(rows)
    smallest = next((row for row in rows if worst(row) >= TARGET), None)
    lines = ["| student | method | bits | params | GMACs | file (KB) | built-in test (%) | FSDD (%) "
             "| worse of the two (%) | on the frontier |", "|---|---|---|---|---|---|---|---|---|---|"]
    for index, row in enumerate(rows):
        lines.append(f"| {row['student']} | {row['method']} | {row['bits']} | {row['params']:,} | {row['gmacs']:.3g} | "
                     f"{row['size_bytes'] / 1000:,.1f} | {100 * row['test_accuracy']:.1f} | "
                     f"{100 * row['fsdd_accuracy']:.1f} | {100 * worst(row):.1f} | {'yes' if index in front else ''} |")
    same: dict[tuple[float, float], list[str]] = {}  # one row per distinct teacher, naming the students it taught
    for teacher in teachers:
        same.setdefault((teacher["test_accuracy"], teacher["fsdd_accuracy"]), []).append(teacher["for"])
    for (test, fsdd), students in same.items():
        lines.append(f"| teacher (for {', '.join(students)}) | | | | | | {100 * test:.1f} | {100 * fsdd:.1f} | | |")
    verdict = (f"Smallest file with >= {TARGET:.0%} on both: {smallest['student']} {smallest['method']} "
               f"{smallest['bits']}-bit, {smallest['size_bytes']:,} bytes." if smallest else
               f"No file reaches {TARGET:.0%} on both sets.")
    return "\n".join(lines) + "\n\n" + verdict + "\n"


def pareto_png(rows: list[dict[str, Any]]) -> bytes:
    """Size on disk (log) vs accuracy: one colour per student, circles built-in test, triangles FSDD."""
    import io

    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 5), layout="constrained")
    axes = figure.subplots()
    colours = {}
    for row in sorted(rows, key=lambda row: row["size_bytes"]):
        colour = colours.setdefault(row["student"], f"C{len(colours)}")
        size = row["size_bytes"] / 1000
        for key, marker, name in (("test_accuracy", "o", "built-in test"), ("fsdd_accuracy", "^", "FSDD")):
            axes.plot(size, 100 * row[key], marker=marker, color=colour, linestyle="none",
                      label=f"{row['student']}, {name}")
        axes.annotate(f"{row['bits']}b", (size, 100 * row["test_accuracy"]), textcoords="offset points",
                      xytext=(4, 4), fontsize=7, color=colour)
    axes.axhline(100 * TARGET, color="gray", linestyle="--", linewidth=1)
    axes.axvline(32, color="gray", linestyle=":", linewidth=1)
    handles, labels = axes.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    axes.legend(unique.values(), unique.keys(), fontsize=7, loc="lower right")
    axes.set_xscale("log")
    axes.set_xlabel("model file (KB, log scale); dotted: 32 KB")
    axes.set_ylabel("accuracy (%); dashed: 90 %")
    axes.set_title("Smallest model that still works: built-in held-out test and FSDD", fontsize=11)
    axes.grid(True, which="both", alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def main() -> int:
    found, looked = find_fsdd()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/pareto"))
    parser.add_argument("--students", nargs="+", default=["conv-50k", "conv-200k", "conv-1m"])
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 4, 3, 2])
    parser.add_argument("--small-config", type=Path, default=Path("configs/tiny-conv.yaml"))
    parser.add_argument("--fsdd", type=Path, default=found, help="FSDD recordings folder")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    missing = fsdd_not_found(args.fsdd, looked)
    if missing:
        print(missing)
        return 0
    for student in args.students:
        started = time.perf_counter()
        config = student_config(student, args.small_config, args.overrides)
        rows = student_rows(student, config, sorted(args.bits, reverse=True), args.out / student, args.fsdd)
        atomic_write_text(args.out / student / "rows.json", json.dumps(rows, indent=1) + "\n")
        print(f"{student}: {time.perf_counter() - started:.0f} s")
    rows, teachers = [], []
    for path in sorted(args.out.glob("*/rows.json")):
        teacher, *files = json.loads(path.read_text(encoding="utf-8"))
        rows += files
        teachers.append({**teacher, "for": path.parent.name})
    report = pareto_markdown(rows, teachers)
    atomic_write_text(args.out / "pareto.md", report)
    atomic_write_text(args.out / "pareto.json", json.dumps(rows, indent=1) + "\n")
    atomic_write_bytes(args.out / "pareto.png", pareto_png(rows))
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
