"""Results of several models side by side: the table in the paper's shape and the accuracy-vs-size plot.

A results row is a plain dict (JSON as it is), one per evaluated model:

    method             "teacher", "student fp32", "student + distill", "PTQ", "sequential", "QAT", "QUADS", ...
    bits               int (32 for float models)
    params             int, classifier parameters (encoder + head)
    size_bytes         bytes of the model file on disk, None where there is no file (the teacher)
    theoretical_bytes  the payload the file must hold (see `quads.commands.evaluate`), or None
    gmacs, gmacs_30s   GMACs per utterance at its real length / at Whisper's 30 s padding, or None
    accuracy, f1       fractions in [0, 1] (macro-F1), or None
    model_file         str or None;  seed: int, optional

`EvaluationResult.to_row(method, seed)` builds one. `aggregate_seeds` turns rows of several seeds into one row
per (method, bits) with accuracy_mean / accuracy_std / f1_mean / f1_std / n_seeds, rendered "97.1 ± 0.4".

Table order: the float references first (teacher, student fp32, student + distill), then the compressed
models grouped by bit width, widest first, and within a width PTQ, sequential, QAT, QUADS, then any other
method in the order first seen: so each line block compares the recipes at equal size. Sizes are in MB of
2^20 bytes, as the paper's table counts them (Whisper-base: 19.85 M params x 4 bytes = 75.7 MB).
"""

from __future__ import annotations

import io
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from quads.atomic import atomic_write_bytes, atomic_write_text
from quads.errors import DataError

REFERENCE_METHODS = ("teacher", "student fp32", "student + distill", "student fp32 (equal budget)",
                     "student + distill (equal budget)")
COMPRESSED_METHODS = ("PTQ", "sequential", "QAT", "QUADS")
TEACHER = "teacher"
ROW_KEYS = ("method", "bits", "params", "size_bytes", "theoretical_bytes", "gmacs", "gmacs_30s", "accuracy", "f1",
            "model_file")
FRACTION_KEYS = ("accuracy", "f1", "accuracy_mean", "accuracy_std", "f1_mean", "f1_std")
MB = 2**20
MISSING = "–"
METHOD_STYLES = {  # colour, marker: stable across plots so a method looks the same everywhere
    "teacher": ("black", "*"),
    "student fp32": ("tab:gray", "s"),
    "student + distill": ("tab:brown", "D"),
    "student fp32 (equal budget)": ("silver", "s"),
    "student + distill (equal budget)": ("peru", "D"),
    "PTQ": ("tab:orange", "v"),
    "sequential": ("tab:green", "^"),
    "QAT": ("tab:purple", "P"),
    "QUADS": ("tab:blue", "o"),
}
OTHER_STYLES = [("tab:red", "X"), ("tab:pink", "h"), ("tab:olive", "<"), ("tab:cyan", ">")]


# ---------------------------------------------------------------------------------------------- rows


def check_rows(rows: Sequence[Any], source: str = "results") -> list[dict[str, Any]]:
    """Rows as a list of dicts with every key of ROW_KEYS; a DataError names the row and key otherwise."""
    if not isinstance(rows, Sequence) or isinstance(rows, str | bytes):
        raise DataError(f"{source}: expected a list of result rows, got {type(rows).__name__}")
    for number, row in enumerate(rows):
        where = f"{source}: row {number}"
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a mapping, got {type(row).__name__}")
        missing = [key for key in ROW_KEYS if key not in row]
        if missing:
            raise DataError(f"{where} ({row.get('method', '?')}): missing {', '.join(missing)}")
        if not isinstance(row["method"], str) or not row["method"]:
            raise DataError(f"{where}: method must be a non-empty string, got {row['method']!r}")
        if isinstance(row["bits"], bool) or not isinstance(row["bits"], int):
            raise DataError(f"{where} ({row['method']}): bits must be an integer, got {row['bits']!r}")
        for key in FRACTION_KEYS:
            value = row.get(key)
            if value is not None and not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
                raise DataError(f"{where} ({row['method']}): {key} must be a fraction in [0, 1], got {value!r}")
    return list(rows)


def row_order(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The table order described in the module docstring (stable: equal keys keep their input order)."""
    first_seen: dict[str, int] = {}
    for row in rows:
        first_seen.setdefault(row["method"], len(first_seen))

    def key(indexed: tuple[int, dict[str, Any]]) -> tuple:
        index, row = indexed
        method = row["method"]
        if method in REFERENCE_METHODS:
            return (0, REFERENCE_METHODS.index(method), -row["bits"], 0, index)
        rank = (COMPRESSED_METHODS.index(method) if method in COMPRESSED_METHODS
                else len(COMPRESSED_METHODS) + first_seen[method])
        return (1, 0, -row["bits"], rank, index)

    return [row for _, row in sorted(enumerate(rows), key=key)]


def _mean(values: Sequence[Any]) -> float | None:
    present = [float(value) for value in values if value is not None]
    return statistics.fmean(present) if present else None


def _std(values: Sequence[Any]) -> float | None:
    """Sample standard deviation (n - 1); 0 for a single run, which has no spread to report."""
    present = [float(value) for value in values if value is not None]
    if not present:
        return None
    return statistics.stdev(present) if len(present) > 1 else 0.0


def aggregate_seeds(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, bits), in first-seen order: accuracy/f1 mean and sample std over the seeds.

    Sizes, parameters and GMACs are the group's mean (they agree across seeds; the file size may differ by
    a few header bytes). `accuracy` / `f1` hold the means, so an aggregated row is still a valid results row.
    """
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in check_rows(rows):
        groups.setdefault((row["method"], row["bits"]), []).append(row)
    aggregated = []
    for (method, bits), group in groups.items():
        seeds = [row["seed"] for row in group if row.get("seed") is not None]
        repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
        if repeated:
            raise DataError(f"results: {method} at {bits} bits lists seed(s) {repeated} more than once")
        accuracy = [row["accuracy"] for row in group]
        f1 = [row["f1"] for row in group]
        means = {key: _mean([row[key] for row in group]) for key in ("params", "size_bytes", "theoretical_bytes",
                                                                      "gmacs", "gmacs_30s")}
        aggregated.append({
            "method": method, "bits": bits,
            **{key: round(value) if value is not None else None for key, value in means.items()
               if key in ("params", "size_bytes", "theoretical_bytes")},
            "gmacs": means["gmacs"], "gmacs_30s": means["gmacs_30s"],
            "accuracy": _mean(accuracy), "f1": _mean(f1),
            "accuracy_mean": _mean(accuracy), "accuracy_std": _std(accuracy),
            "f1_mean": _mean(f1), "f1_std": _std(f1),
            "n_seeds": len(group), "seeds": seeds,
            "model_file": None, "model_files": [row["model_file"] for row in group if row["model_file"]],
        })
    return aggregated


# ---------------------------------------------------------------------------------------------- table


def significant(value: float | None, digits: int = 3) -> str:
    """`digits` significant figures in fixed-point notation (2422, 75.7, 6.91, 0.0531)."""
    if value is None:
        return MISSING
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def format_mean_std(mean: float | None, std: float | None, decimals: int = 1) -> str:
    """A fraction's mean ± std in percent: "97.1 ± 0.4"; just the mean when there is no spread to show."""
    if mean is None:
        return MISSING
    if std is None:
        return f"{100 * mean:.{decimals}f}"
    return f"{100 * mean:.{decimals}f} ± {100 * std:.{decimals}f}"


def _percent(row: dict[str, Any], key: str) -> str:
    if "n_seeds" in row:
        return format_mean_std(row.get(f"{key}_mean"), row.get(f"{key}_std") if row["n_seeds"] > 1 else None)
    return MISSING if row[key] is None else f"{100 * row[key]:.2f}"


def _megabytes(value: int | None) -> str:
    return significant(value / MB) if value is not None else MISSING


def results_markdown(rows: Sequence[dict[str, Any]], title: str) -> str:
    """A Markdown table with one line per row, in `row_order`; aggregated rows add a seeds column."""
    rows = row_order(check_rows(rows))
    seeds = any("n_seeds" in row for row in rows)
    header = ["method", "bits", "params (M)", "size (MB)", "theoretical (MB)", "GMACs", "GMACs (30 s)",
              "accuracy (%)", "F1 (%)"] + (["seeds"] if seeds else [])
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            row["method"], str(row["bits"]),
            significant(row["params"] / 1e6) if row["params"] is not None else MISSING,
            _megabytes(row["size_bytes"]), _megabytes(row["theoretical_bytes"]),
            significant(row["gmacs"]), significant(row["gmacs_30s"]),
            _percent(row, "accuracy"), _percent(row, "f1"),
        ] + ([str(row.get("n_seeds", 1))] if seeds else [])
        lines.append("| " + " | ".join(cells) + " |")
    notes = ["", "Size: the model file on disk; theoretical: its payload (indices + codebooks + float remainder). "
             "MB = 2^20 bytes. GMACs per utterance at its real length, and at Whisper's 30 s padding as the paper "
             "counts."]
    if seeds:
        notes.append("Accuracy and F1: mean ± sample standard deviation over the seeds.")
    return "\n".join(lines + notes) + "\n"


# ---------------------------------------------------------------------------------------------- plot


def _style(method: str, others: dict[str, tuple[str, str]]) -> tuple[str, str]:
    if method in METHOD_STYLES:
        return METHOD_STYLES[method]
    return others.setdefault(method, OTHER_STYLES[len(others) % len(OTHER_STYLES)])


def plot_size(row: dict[str, Any]) -> int | None:
    """The size a row is plotted at: its file on disk, else its theoretical size (a teacher has no file)."""
    return row["size_bytes"] if row["size_bytes"] is not None else row["theoretical_bytes"]


def _minor_size_label(value: float, _position: int) -> str:
    """Label the 2x and 5x minor ticks of a log axis (2, 5, 20, 50...), leave the others blank."""
    if value <= 0:
        return ""
    leading = value / 10 ** math.floor(math.log10(value) + 1e-9)
    return f"{value:g}" if round(leading, 6) in (2.0, 5.0) else ""


def pareto_png(rows: Sequence[dict[str, Any]], title: str) -> bytes:
    """Accuracy vs model size (log x), one colour and marker per method, points labelled with their bits; the
    teacher is a dashed reference line (and a point where its size is known); the grey steps join the models
    no other model beats on both size and accuracy."""
    from matplotlib.figure import Figure  # no pyplot: no global backend, safe in any process

    rows = [row for row in row_order(check_rows(rows)) if row["accuracy"] is not None]
    figure = Figure(figsize=(7.5, 5), layout="constrained")
    axes = figure.subplots()
    others: dict[str, tuple[str, str]] = {}
    labelled: set[str] = set()
    frontier = []
    for row in rows:
        method, size = row["method"], plot_size(row)
        colour, marker = _style(method, others)
        accuracy = 100 * row["accuracy"]
        if method == TEACHER:
            axes.axhline(accuracy, color=colour, linestyle="--", linewidth=1, alpha=0.6)
        if size is None:
            continue
        std = row.get("accuracy_std") if row.get("n_seeds", 1) > 1 else None
        axes.errorbar(size / MB, accuracy, yerr=None if std is None else 100 * std, color=colour, marker=marker,
                      markersize=10 if marker == "*" else 7, linestyle="none", capsize=3,
                      label=None if method in labelled else method)
        labelled.add(method)
        axes.annotate(f"{row['bits']}b", (size / MB, accuracy), textcoords="offset points", xytext=(5, 5),
                      fontsize=8, color=colour)
        if method != TEACHER:
            frontier.append((size / MB, accuracy))
    front = []
    for size, accuracy in sorted(frontier, key=lambda point: (point[0], -point[1])):
        if not front or accuracy > front[-1][1]:
            front.append((size, accuracy))
    if len(front) > 1:
        axes.step(*zip(*front, strict=True), where="post", color="lightgray", linewidth=1, zorder=0)
    teachers = [row for row in rows if row["method"] == TEACHER]
    if teachers and TEACHER not in labelled:
        axes.plot([], [], color=METHOD_STYLES[TEACHER][0], linestyle="--", label=TEACHER)
    if frontier or labelled:
        from matplotlib.ticker import FuncFormatter

        axes.set_xscale("log")
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 0.1, 10 rather than 10^-1
        axes.xaxis.set_minor_formatter(FuncFormatter(_minor_size_label))
    axes.set_xlabel("model size (MB, log scale)")
    axes.set_ylabel("accuracy (%)")
    axes.set_title(title, fontsize=11)
    axes.grid(True, which="both", alpha=0.3)
    if labelled or teachers:
        axes.legend(fontsize=8, loc="lower right")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- files


def write_results(rows: Sequence[dict[str, Any]], out_dir: str | Path, title: str) -> dict[str, Path]:
    """results.json (the rows as given), results.md (the table) and pareto.png in `out_dir`, each atomically."""
    rows = check_rows(rows)
    out_dir = Path(out_dir)
    paths = {name: out_dir / name for name in ("results.json", "results.md", "pareto.png")}
    atomic_write_text(paths["results.json"], json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    atomic_write_text(paths["results.md"], results_markdown(rows, title))
    atomic_write_bytes(paths["pareto.png"], pareto_png(rows, title))
    return paths


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a results.json written by `write_results` (e.g. to add runs to an interrupted grid)."""
    path = Path(path)
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such results file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not a readable results file ({error})") from None
    return check_rows(rows, source=str(path))
