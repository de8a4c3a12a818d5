"""`quads ablate`: the full ablation grid, every recipe of docs/METHOD.md x {32, 16, 8, 4, 2} bits x seeds.

Rows: student fp32 (CE only) and student + distillation at 32 bits; post-training k-means at 16 (a float16
cast), 8, 4 and 2 bits; codebook QAT without a teacher, sequential and QUADS at 8, 4 and 2 bits (at 16 and 32
bits they coincide with the fp32 students, so they are not trained twice), and the equal-budget controls: the
fp32 and distilled students trained as many epochs as the quantizing recipes (`method` ending in "(equal
budget)"). Each cell is a separate run folder; finished cells are skipped when the command is run again.
`results.json` / `results.md` hold every seed's row; `results_mean_std.md` and `pareto.png` the mean ± std
over seeds; `paired.md` / `paired.json` QUADS − sequential paired by seed with its p-values (`quads.commands.paired`),
and QUADS − the equal-budget distilled student where that control ran.
`--lambdas` runs the centroid-coefficient ablation instead (`quads.commands.lambda_sweep`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from quads.atomic import atomic_write_bytes, atomic_write_text
from quads.commands.grid import EQUAL_BUDGET_DISTILL, Cell, run_grid
from quads.commands.paired import paired_differences, paired_markdown
from quads.commands.report import aggregate_seeds, pareto_png, results_markdown, write_results
from quads.config import add_config_arguments, load_config
from quads.training.experiment import write_json

GRID = (("fp32", (32,)), ("distill", (32,)), ("ptq", (16, 8, 4, 2)), ("qat", (8, 4, 2)),
        ("sequential", (8, 4, 2)), ("quads", (8, 4, 2)))
TITLE = "QUADS ablation on the built-in synthetic command corpus"


EQUAL_BUDGET_RECIPES = ("fp32", "distill")


def ablation_cells(seeds: list[int], bits: list[int] | None = None, recipes: list[str] | None = None,
                   equal_budget: bool = True) -> list[Cell]:
    cells = [Cell(recipe, b, seed) for seed in seeds for recipe, widths in GRID for b in widths
             if (bits is None or b in bits) and (recipes is None or recipe in recipes)]
    if equal_budget:
        cells += [Cell(recipe, 32, seed, equal_budget=True) for seed in seeds for recipe in EQUAL_BUDGET_RECIPES
                  if (bits is None or 32 in bits) and (recipes is None or recipe in recipes)]
    return cells


def run_ablation(out_dir: str | Path, seeds: list[int], config_path: str | Path | None = None,
                 overrides: list[str] | None = None, *, bits: list[int] | None = None,
                 recipes: list[str] | None = None, progress: bool = True, equal_budget: bool = True) -> list[dict]:
    started = time.perf_counter()
    out_dir = Path(out_dir)
    config = load_config(config_path, overrides)
    rows, _ = run_grid(config, ablation_cells(seeds, bits, recipes, equal_budget), out_dir, progress=progress)
    write_results(rows, out_dir, TITLE)
    aggregated = aggregate_seeds(rows)
    title = f"{TITLE}, mean ± std over seeds {', '.join(map(str, seeds))}"
    table = results_markdown(aggregated, title)
    atomic_write_text(out_dir / "results_mean_std.md", table)
    atomic_write_bytes(out_dir / "pareto.png", pareto_png(aggregated, title))  # one point per method and width
    paired = paired_differences(rows)
    against_budget = paired_differences(rows, second=EQUAL_BUDGET_DISTILL, against_bits=32)
    write_json(out_dir / "paired.json", {"paired": paired, "against_equal_budget": against_budget})
    report = paired_markdown(paired) + (f"\n\n{paired_markdown(against_budget)}" if against_budget else "")
    atomic_write_text(out_dir / "paired.md", report + "\n")
    print()
    print(table)
    print()
    print(report)
    print(f"ablation finished in {(time.perf_counter() - started) / 60:.1f} min; results in {out_dir}")
    return rows


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("results/ablate"), help="results folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument("--bits", type=int, nargs="+", help="only these bit widths")
    parser.add_argument("--recipes", nargs="+", help="only these recipes (fp32 distill ptq qat sequential quads)")
    parser.add_argument("--no-equal-budget", action="store_true",
                        help="skip the equal-budget fp32 and distilled controls")
    parser.add_argument("--lambdas", type=parse_lambdas, metavar="L1,L2,...",
                        help="run the centroid-coefficient ablation instead: QUADS and sequential at each "
                        "quant.centroid_weight (default bits 2 4), e.g. --lambdas 0,0.01,0.1,1")
    parser.add_argument("--dry-run", action="store_true", help="print the planned cache sizes, memory bound and "
                        "steps per epoch, then stop")


def parse_lambdas(text: str) -> list[float]:
    try:
        values = [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lambdas: expected comma-separated numbers, got {text!r}") from None
    if not values or any(not value >= 0 for value in values):
        raise argparse.ArgumentTypeError(f"--lambdas: quant.centroid_weight values must be >= 0, got {text!r}")
    return values


def run(args: argparse.Namespace) -> int:
    if args.dry_run:
        from quads.training.run_plan import print_dry_run

        cells = list(dict.fromkeys((c.recipe, c.bits) for c in ablation_cells(args.seeds, args.bits, args.recipes)))
        print_dry_run(load_config(args.config, args.overrides), cells, f"quads ablate ({len(args.seeds)} seeds)")
        return 0
    if args.lambdas:
        from quads.commands.lambda_sweep import run_lambda_sweep

        run_lambda_sweep(args.out, args.lambdas, args.seeds, args.config, args.overrides, bits=args.bits or [2, 4],
                         recipes=args.recipes, progress=not args.quiet)
        return 0
    run_ablation(args.out, args.seeds, args.config, args.overrides, bits=args.bits, recipes=args.recipes,
                 progress=not args.quiet, equal_budget=not args.no_equal_budget)
    return 0
