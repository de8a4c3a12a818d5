"""Time `quads synth` on the default built-in corpus: wall time, utterances, speakers per split, audio minutes.

    .venv/bin/python bench/bench_synth.py [--jobs J] [--keep DIR]

The default corpus is meant to take at most about 2 minutes on 2 cores; `quads demo` builds it on first use.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from quads.synth import synthesize_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=None, help="parallel TTS jobs (default: all cores)")
    parser.add_argument("--keep", metavar="DIR", help="write the corpus here instead of a temporary folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="quads-bench-synth-") as scratch:
        out = Path(args.keep) if args.keep else Path(scratch) / "corpus"
        started = time.perf_counter()
        report = synthesize_corpus(out, seed=args.seed, jobs=args.jobs, progress=False)
        wall = time.perf_counter() - started
        size_mb = sum(path.stat().st_size for path in out.rglob("*.wav")) / 1e6
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"cores: {os.cpu_count()}  jobs: {args.jobs or os.cpu_count()}  load average (1 min) after: {load:.2f}")
    print(f"wall time: {wall:.1f} s  ({report.total_utterances / wall:.1f} utterances/s)")
    print(f"utterances: {report.total_utterances}  " + "  ".join(f"{s}={n}" for s, n in report.utterances.items()))
    print("speakers per split: " + "  ".join(f"{s}={n}" for s, n in report.speakers.items()))
    print(f"audio: {report.audio_seconds / 60:.1f} min  "
          f"(mean {report.audio_seconds / report.total_utterances:.2f} s per utterance), {size_mb:.0f} MB of WAV")


if __name__ == "__main__":
    main()
