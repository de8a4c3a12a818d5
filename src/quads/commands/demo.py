"""`quads demo`: the whole QUADS story on the embedded default, offline, on a laptop-class CPU.

Synthesises the built-in command corpus if absent, pre-tunes the Whisper tiny.en teacher's intent head, trains
the distilled student (cut from the teacher), compresses it with post-training k-means and QUADS at 4 and 2
bits (`--sequential` adds the sequential recipe at 2 bits), exports every model as a packed file, evaluates
each file on the test split (wordings and voice families no model heard) and writes `results.json`,
`results.md` and `pareto.png`. Where FSDD is present (`quads.commands.fsdd`), the same recipe trained on
synthetic digits is scored on real human recordings (`fsdd.md`). Interrupted? Run the same command again:
finished runs are kept and an unfinished one resumes from its last epoch.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from quads.atomic import atomic_write_text
from quads.commands.fsdd import find_fsdd, fsdd_markdown, fsdd_rows
from quads.commands.grid import Cell, run_grid
from quads.commands.report import results_markdown, write_results
from quads.config import add_config_arguments, load_config
from quads.training.precision import precision_note

# Trimmed to what a laptop finishes in minutes; `quads ablate` runs every recipe at every width.
DEMO_CELLS = (("distill", 32), ("ptq", 4), ("ptq", 2), ("quads", 4), ("quads", 2))
# `--sequential`: the paper's control (quantize the distilled student with CE, teacher gone). Off by default: on
# 2 cores it is one more long run, and at 2 bits it was level with QUADS within noise (README, bench/README).
SEQUENTIAL_CELLS = (("sequential", 2),)
FSDD_CELLS = (("distill", 32), ("quads", 4), ("quads", 2))
# `--equal-budget`: the fp32 and distilled students trained as many epochs as QUADS (its distilled student's plus
# its own), so the table shows how much of QUADS' margin is more training. Off by default: it adds two long runs.
EQUAL_BUDGET_CELLS = (("distill", 32), ("fp32", 32))
TITLE = "QUADS, built-in commands (31 intents; test: unseen wordings and voices)"


def run_demo(out_dir: str | Path, config_path: str | Path | None = None, overrides: list[str] | None = None, *,
             progress: bool = True, real_speech: bool = True, equal_budget: bool = False,
             sequential: bool = False) -> list[dict]:
    """Run the demo grid into `out_dir` and write the results table and plot; returns the rows. With
    `real_speech` and FSDD present, also train on synthetic digits and score on FSDD (`fsdd.md`); with
    `equal_budget`, also the equal-budget fp32 and distilled controls (EQUAL_BUDGET_CELLS); with `sequential`,
    also the sequential recipe (SEQUENTIAL_CELLS)."""
    started = time.perf_counter()
    config = load_config(config_path, overrides)
    cells = [Cell(recipe, bits, config.seed) for recipe, bits in demo_cells(sequential)]
    if equal_budget:
        cells += [Cell(recipe, bits, config.seed, equal_budget=True) for recipe, bits in EQUAL_BUDGET_CELLS]
    rows, prepared = run_grid(config, cells, out_dir, progress=progress)
    write_results(rows, out_dir, TITLE)
    recordings, looked = find_fsdd()
    fsdd_table = None
    if real_speech and recordings is not None:
        print(f"real-speech check: the same recipe on synthetic digits, scored on FSDD ({recordings})", flush=True)
        fsdd_cells = [Cell(recipe, bits, config.seed) for recipe, bits in FSDD_CELLS]
        fsdd_table = fsdd_markdown(fsdd_rows(config, fsdd_cells, Path(out_dir) / "fsdd", recordings,
                                             progress=progress))
        atomic_write_text(Path(out_dir) / "fsdd.md", fsdd_table + "\n")
    elapsed = time.perf_counter() - started
    print()
    print(results_markdown(rows, TITLE))
    print()
    if fsdd_table:
        print(fsdd_table)
    elif real_speech:
        print(f"FSDD (real speech) not found, so not scored; looked in {', '.join(map(str, looked))} "
              "(set QUADS_SHARED_DATA to the folder holding fsdd/recordings)")
    if prepared.teacher_frames is not None:
        print(prepared.teacher_frames.stats)
    print(precision_note(config.optim.precision))
    print(f"demo finished in {elapsed / 60:.1f} min; results in {out_dir}/results.md, results.json, pareto.png")
    return rows


def demo_cells(sequential: bool = False) -> list[tuple[str, int]]:
    """The (recipe, bits) of the demo's command-corpus grid, with the sequential control when asked."""
    return [*DEMO_CELLS, *(SEQUENTIAL_CELLS if sequential else ())]


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("results/demo"), help="results folder (default results/demo)")
    parser.add_argument("--no-fsdd", action="store_true", help="skip the real-speech (FSDD) part")
    parser.add_argument("--equal-budget", action="store_true", help="also train the fp32 and distilled students "
                        "for as many epochs as QUADS (the equal-budget controls; two more runs)")
    parser.add_argument("--sequential", action="store_true", help="also the sequential recipe at 2 bits (quantize "
                        "the distilled student with CE, teacher gone: the paper's control; one more run)")
    parser.add_argument("--dry-run", action="store_true", help="print the planned cache sizes, memory bound and "
                        "steps per epoch of the command-corpus grid, then stop")


def run(args: argparse.Namespace) -> int:
    if args.dry_run:
        from quads.training.run_plan import print_dry_run

        print_dry_run(load_config(args.config, args.overrides), demo_cells(args.sequential), "quads demo")
        return 0
    run_demo(args.out, args.config, args.overrides, progress=not args.quiet, real_speech=not args.no_fsdd,
             equal_budget=args.equal_budget, sequential=args.sequential)
    return 0
