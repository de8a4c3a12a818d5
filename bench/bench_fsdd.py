"""Real-speech check: train on synthetic spoken digits only, test on real human recordings (FSDD).

Synthesises the ten digits with the built-in synthesiser (espeak-ng + flite voices), pre-tunes the teacher and
trains the student on that synthetic corpus with the default settings (or --config / --set), compresses it
with QUADS at 4 and 2 bits, then scores the teacher and every packed model file on the Free Spoken Digit
Dataset (3,000 real recordings, 6 speakers, 8 kHz resampled to 16 kHz), which no model saw. `quads demo`
prints the same table when FSDD is present.

    .venv/bin/python bench/bench_fsdd.py --out runs/fsdd            # says where it looked when FSDD is absent

`--paired SEED ...` answers the comparison the paper is about on real speech: per seed one distilled student,
QUADS and the sequential recipe (quantize with CE, teacher gone) both starting from it at 4 and 2 bits, and
`OUT/paired.md` with QUADS − sequential per seed, mean, std, Wilcoxon and paired-t p-values on FSDD and on the
synthetic test split (with 5 seeds the smallest two-sided Wilcoxon p is 0.0625; the t-test can reach 0.05):

    .venv/bin/python bench/bench_fsdd.py --out runs/paired-fsdd --paired 0 1 2 3 4
    .venv/bin/python bench/bench_fsdd.py --out runs/paired-2bit --paired 0 1 2 --bits 2   # one width only

`--equal-budget` adds, per seed, the control the comparison needs: a distilled student trained as many epochs as
the distilled student plus its QUADS stage, in one schedule; with `--paired`, `paired.md` then also holds QUADS −
that control per seed. A second call with the same OUT reuses every finished cell.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from quads.commands.fsdd import find_fsdd, fsdd_markdown, fsdd_not_found, fsdd_rows
from quads.commands.grid import EQUAL_BUDGET_DISTILL, Cell
from quads.commands.paired import paired_differences, paired_markdown
from quads.config import load_config


def main() -> int:
    found, looked = find_fsdd()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/fsdd"))
    parser.add_argument("--fsdd", type=Path, default=found, help="FSDD recordings folder")
    parser.add_argument("--augment", choices=("room", "light", "none"), default="room",
                        help="synthetic digits with rooms and microphones (default), light (noise, gain, speed, "
                             "silence only: corpora v1/v2) or clean TTS")
    parser.add_argument("--kokoro-speakers", type=int, default=0, metavar="N",
                        help="add N settings of the Kokoro voices to the synthetic digits (a corpus of its own)")
    parser.add_argument("--fsdd-limit", type=int, default=0, help="use only N recordings (0 = all 3,000)")
    parser.add_argument("--config", type=Path, help="YAML recipe (default: the built-in settings)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--paired", type=int, nargs="+", metavar="SEED",
                        help="QUADS and sequential at each --bits width per seed, paired: writes OUT/paired.md")
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 2], metavar="B",
                        help="the quantized widths (default: 4 2)")
    parser.add_argument("--equal-budget", action="store_true",
                        help="also a distilled student per seed trained as many epochs as QUADS (the control)")
    args = parser.parse_args()
    missing = fsdd_not_found(args.fsdd, looked)
    if missing:
        print(missing)
        return 0
    started = time.perf_counter()
    config = load_config(args.config, args.overrides)
    if args.paired:
        cells = [Cell("distill", 32, seed) for seed in args.paired]
        cells += [Cell(recipe, bits, seed) for seed in args.paired for bits in args.bits
                  for recipe in ("quads", "sequential")]
    else:
        cells = [Cell("distill", 32, config.seed)] + [Cell("quads", bits, config.seed) for bits in args.bits]
    seeds = args.paired or [config.seed]
    if args.equal_budget:
        cells += [Cell("distill", 32, seed, equal_budget=True) for seed in seeds]
    rows = fsdd_rows(config, cells, args.out, args.fsdd, limit=args.fsdd_limit, augment=args.augment,
                     kokoro_speakers=args.kokoro_speakers)
    print()
    print(fsdd_markdown(rows))
    if args.paired:
        comparisons = [{}] + ([{"second": EQUAL_BUDGET_DISTILL, "against_bits": 32}] if args.equal_budget else [])
        report = "\n\n".join(paired_markdown(paired_differences(rows, key=key, **against))
                               for against in comparisons for key in ("fsdd_accuracy", "accuracy"))
        (args.out / "paired.md").write_text(report + "\n", encoding="utf-8")
        (args.out / "rows.json").write_text(json.dumps(rows, indent=1, default=str) + "\n", encoding="utf-8")
        print()
        print(report)
    print(f"wall time {time.perf_counter() - started:.0f} s, torch threads {torch.get_num_threads()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
