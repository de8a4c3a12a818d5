"""`quads ablate`: the full ablation grid of METHOD.md, every recipe x {32, 16, 8, 4, 2} bits x seeds.

Rows: student fp32 (CE only) and student + distillation at 32 bits; post-training k-means at 16 (a float16
cast), 8, 4 and 2 bits; codebook QAT without a teacher, sequential and QUADS at 8, 4 and 2 bits (at 16 and 32
bits they coincide with the fp32 students, so they are not trained twice). Each cell is a separate run
folder; finished cells are skipped when the command is run again. `results.json` / `results.md` hold every
seed's row; `results_mean_std.md` and `pareto.png` the mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from quads.atomic import atomic_write_bytes, atomic_write_text
from quads.config import add_config_arguments, load_config
from quads.grid import Cell, run_grid
from quads.report import aggregate_seeds, pareto_png, results_markdown, write_results

GRID = (("fp32", (32,)), ("distill", (32,)), ("ptq", (16, 8, 4, 2)), ("qat", (8, 4, 2)),
        ("sequential", (8, 4, 2)), ("quads", (8, 4, 2)))
TITLE = "QUADS ablation on the built-in synthetic command corpus"


def ablation_cells(seeds: list[int], bits: list[int] | None = None, recipes: list[str] | None = None) -> list[Cell]:
    return [Cell(recipe, b, seed) for seed in seeds for recipe, widths in GRID for b in widths
            if (bits is None or b in bits) and (recipes is None or recipe in recipes)]


def run_ablation(out_dir: str | Path, seeds: list[int], config_path: str | Path | None = None,
                 overrides: list[str] | None = None, *, bits: list[int] | None = None,
                 recipes: list[str] | None = None, progress: bool = True) -> list[dict]:
    started = time.perf_counter()
    out_dir = Path(out_dir)
    config = load_config(config_path, overrides)
    rows, _ = run_grid(config, ablation_cells(seeds, bits, recipes), out_dir, progress=progress)
    write_results(rows, out_dir, TITLE)
    aggregated = aggregate_seeds(rows)
    title = f"{TITLE}, mean ± std over seeds {', '.join(map(str, seeds))}"
    table = results_markdown(aggregated, title)
    atomic_write_text(out_dir / "results_mean_std.md", table)
    atomic_write_bytes(out_dir / "pareto.png", pareto_png(aggregated, title))  # one point per method and width
    print()
    print(table)
    print(f"ablation finished in {(time.perf_counter() - started) / 60:.1f} min; results in {out_dir}")
    return rows


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("results/ablate"), help="results folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument("--bits", type=int, nargs="+", help="only these bit widths")
    parser.add_argument("--recipes", nargs="+", help="only these recipes (fp32 distill ptq qat sequential quads)")


def run(args: argparse.Namespace) -> int:
    run_ablation(args.out, args.seeds, args.config, args.overrides, bits=args.bits, recipes=args.recipes,
                 progress=not args.quiet)
    return 0
