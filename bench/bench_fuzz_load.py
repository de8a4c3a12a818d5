"""Fuzzed and crafted model files against `quads.load`: how many end in a non-quads exception, and peak memory.

    PYTHONPATH=src .venv/bin/python bench/bench_fuzz_load.py [--count 10000] [--seed 0]

1. `--count` seeded mutations of a tiny conv student's packed file (`tests/helpers/fuzz.py`: metadata fields
   replaced, removed or added; tensors with NaN/Inf, other dtypes, shapes, missing or extra), each written by
   `save_packed`, so its SHA-256 is valid: every load must load or raise a QuadsError (ModelFileError);
2. peak memory (VmHWM after minus VmRSS before `quads.load`, in a fresh process) of loading the largest
   legitimate preset (`whisper-tiny-like`, fp32: 7.6M parameters) and of crafted files: a conv encoder with
   `stage_blocks=[100000, 3]`, a transformer with d_model 512 that still fits the 15M-parameter budget, a 1-bit tensor
   declared far larger than the architecture's (a decompression bomb), and a file padded to 1 GB.

Prints the outcome counts, the first few bugs, and each peak with its ratio to the legitimate model's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PEAK_SCRIPT = """
import sys, resource
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS'):
            return int(line.split()[1]) * 1024
import quads.runtime.model, quads.compression.file_checks, torch
before = rss()
outcome = 'loaded'
try:
    quads.runtime.model.load(sys.argv[1])
except quads.errors.QuadsError as error:
    outcome = 'refused: ' + str(error)[:150]
peak = [int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')][0]
print(peak - before, outcome)
"""


def peak_load_bytes(path: Path) -> tuple[int, str]:
    result = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(path)], capture_output=True, text=True,
                            env={"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
                            check=False)
    if result.returncode != 0:
        return -1, "CRASH " + result.stderr.strip().splitlines()[-1][:200]
    peak, _, outcome = result.stdout.strip().partition(" ")
    return int(peak), outcome


def crafted_files(folder: Path) -> dict[str, Path]:
    from dataclasses import asdict

    import torch
    from tests.helpers.model_files import altered_metadata, tiny_model_parts, write_tiny_model

    from quads.audio import FrontEndConfig
    from quads.compression.codebook import QuantizedTensor
    from quads.compression.packed import save_packed
    from quads.models import build_classifier, preset_config

    files = {}
    classifier = build_classifier({"encoder": preset_config("whisper-tiny-like"), "num_labels": 31})
    labels = [f"intent_{i}" for i in range(31)]
    metadata = {"architecture": classifier.config_dict(), "frontend": asdict(FrontEndConfig()), "labels": labels}
    save_packed(folder / "legit.quads", classifier.state_dict(), {}, metadata)
    files["legitimate whisper-tiny-like fp32"] = folder / "legit.quads"
    classifier = build_classifier({"encoder": {**preset_config("whisper-tiny-like"), "d_model": 512, "n_heads": 8,
                                               "ffn_dim": 2048}, "num_labels": 31})
    metadata = {"architecture": classifier.config_dict(), "frontend": asdict(FrontEndConfig()), "labels": labels}
    save_packed(folder / "largest.quads", classifier.state_dict(), {}, metadata)
    files[f"crafted within the budget ({classifier.num_parameters() / 1e6:.1f}M params)"] = folder / "largest.quads"
    del classifier
    files["stage_blocks=[100000, 3]"] = write_tiny_model(folder / "deep.quads", metadata=altered_metadata(
        lambda m: m["architecture"]["encoder"].update(stage_channels=[16, 16], stage_strides=[2, 2],
                                                      stage_blocks=[100000, 3])))
    files["4096-wide conv (over budget)"] = write_tiny_model(folder / "wide.quads", metadata=altered_metadata(
        lambda m: m["architecture"]["encoder"].update(stem_channels=4096, stage_channels=[4096])))
    float_state, quantized, _ = tiny_model_parts()
    name = next(iter(quantized))
    bomb = dict(quantized)
    numel = 2**27  # 16 MB on disk, 512 MB once decoded to float32
    bomb[name] = QuantizedTensor(bits=1, shape=(numel,), indices=torch.zeros(numel, dtype=torch.uint8),
                                 centroids=torch.zeros(2))
    try:
        save_packed(folder / "bomb.quads", float_state, bomb, tiny_model_parts()[2])
        files["1-bit tensor of 2^27 values (decompression bomb)"] = folder / "bomb.quads"
    except Exception as error:
        print(f"(could not write the decompression bomb: {error})")
    del bomb
    padded = folder / "padded.quads"
    padded.write_bytes(write_tiny_model(folder / "tiny.quads").read_bytes())
    with open(padded, "ab") as handle:
        handle.truncate(2**30)
    files["file padded to 1 GB"] = padded
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-crafted", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    from tests.helpers.fuzz import fuzzed_files, load_outcome
    from tests.helpers.model_files import tiny_model_parts

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parts = tiny_model_parts()
            started = time.perf_counter()
            outcomes: Counter = Counter()
            bugs: Counter = Counter()
            for path in fuzzed_files(parts, folder, args.count, args.seed):
                outcome = load_outcome(path)
                if outcome in ("loaded", "refused"):
                    outcomes[outcome] += 1
                else:
                    outcomes["non-quads exception"] += 1
                    bugs[outcome] += 1
        seconds = time.perf_counter() - started
        print(f"{args.count} fuzzed loads (seed {args.seed}, checksums valid) in {seconds:.0f} s: "
              f"{outcomes['refused']} refused with a ModelFileError, {outcomes['loaded']} loaded, "
              f"{outcomes['non-quads exception']} ended in a non-quads exception")
        for bug, count in bugs.most_common(5):
            print(f"  {count} x {bug}")
        if args.skip_crafted:
            return
        files = crafted_files(folder)
        legit = None
        print("\npeak memory of quads.load in a fresh process (VmHWM after - VmRSS before):")
        for label, path in files.items():
            peak, outcome = peak_load_bytes(path)
            legit = peak if legit is None else legit
            print(f"  {label:50s} {path.stat().st_size / 2**20:8.1f} MB file  peak {peak / 2**20:7.1f} MB  "
                  f"({peak / legit:.2f}x legit)  {outcome[:110]}")


if __name__ == "__main__":
    main()
