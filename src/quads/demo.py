"""`quads demo`: the whole QUADS story on the embedded default, offline, on a laptop-class CPU.

Synthesises the built-in command corpus if absent, pre-tunes the speech_embedding teacher, trains the student
(fp32, with and without distillation), compresses it with post-training k-means, the sequential recipe and
QUADS at 8, 4 and 2 bits, exports every model as a packed file, evaluates each file on the test speakers and
writes `results.json`, `results.md` and `pareto.png`. Interrupted? Run the same command again: finished
runs are kept and an unfinished one resumes from its last epoch.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from quads.config import add_config_arguments, load_config
from quads.grid import Cell, run_grid
from quads.report import results_markdown, write_results

DEMO_CELLS = (("fp32", 32), ("distill", 32), ("ptq", 8), ("ptq", 4), ("ptq", 2), ("sequential", 2), ("quads", 8),
              ("quads", 4), ("quads", 2))
TITLE = "QUADS on the built-in synthetic command corpus (31 FSC intents, unseen TTS speakers)"


def run_demo(out_dir: str | Path, config_path: str | Path | None = None, overrides: list[str] | None = None, *,
             progress: bool = True) -> list[dict]:
    """Run the demo grid into `out_dir` and write the results table and plot; returns the rows."""
    started = time.perf_counter()
    config = load_config(config_path, overrides)
    cells = [Cell(recipe, bits, config.seed) for recipe, bits in DEMO_CELLS]
    rows, prepared = run_grid(config, cells, out_dir, progress=progress)
    write_results(rows, out_dir, TITLE)
    elapsed = time.perf_counter() - started
    print()
    print(results_markdown(rows, TITLE))
    if prepared.teacher_frames is not None:
        print(prepared.teacher_frames.stats)
    print(f"demo finished in {elapsed / 60:.1f} min; results in {out_dir}/results.md, results.json, pareto.png")
    return rows


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("results/demo"), help="results folder (default results/demo)")


def run(args: argparse.Namespace) -> int:
    run_demo(args.out, args.config, args.overrides, progress=not args.quiet)
    return 0
