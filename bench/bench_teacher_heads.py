"""Teacher heads on held-out wordings: stage 0 (`pretune_teacher`) with each head kind over seeds, same frames.

    .venv/bin/python bench/bench_teacher_heads.py [--heads attnpool slots] [--seeds 0 1 2] [--out runs/heads]
        [--set data.path=DIR ...]

The frozen teacher's frames of the configured corpus (the built-in one by default) are cached once; each
(head, seed) pre-tunes a fresh head on the train split, selects its epoch on valid and scores test. On the
built-in corpus, test holds 2 wordings per intent and 2 voice families that train never has, so this measures
what each head does with wordings it never saw. Prints a markdown table (mean ± std over seeds).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from quads.config import load_config
from quads.training.experiment import load_training_corpus, teacher_examples
from quads.training.pretune import build_stage0_teacher, pretune_teacher, teacher_identity


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", nargs="+", default=["attnpool", "slots"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, help="keep the pre-tuned heads here (default: a temporary folder)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    base = load_config(None, args.overrides)
    corpus = load_training_corpus(base.data)
    out = args.out or Path(tempfile.mkdtemp(prefix="quads-heads-"))
    teacher = build_stage0_teacher(base, corpus, out / "encoder")
    frames = teacher_examples(corpus, teacher, base.data)  # every frame: all head kinds read the same cache
    scores: dict[str, list[tuple[float, float]]] = {}
    for head in args.heads:
        for seed in args.seeds:
            config = load_config(None, [*args.overrides, f"teacher.head={head}", f"seed={seed}"])
            tuned = pretune_teacher(config, corpus, frames, out / f"{head}-s{seed}", progress=False,
                                    identity=teacher_identity(teacher))
            valid, test = tuned.metrics["valid_accuracy"], tuned.metrics["test_accuracy"]
            scores.setdefault(head, []).append((valid, test))
            print(f"{head} seed {seed}: valid {100 * valid:.1f}, test {100 * test:.1f}", flush=True)
    print(f"\n{base.teacher.spec} frames, {len(args.seeds)} seeds ({', '.join(map(str, args.seeds))})\n")
    print("| teacher head | valid (%) | test (%) | test per seed |\n|---|---|---|---|")
    for head, rows in scores.items():
        print(f"| {head} | {_mean_std([v for v, _ in rows])} | {_mean_std([t for _, t in rows])} | "
              f"{', '.join(f'{100 * t:.1f}' for _, t in rows)} |")
    return 0


def _mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * spread:.1f}"


if __name__ == "__main__":
    sys.exit(main())
