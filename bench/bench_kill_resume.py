"""kill -9 at five moments of `quads compress` / `quads export`, then `--resume`: bit-identical results?

    PYTHONPATH=src .venv/bin/python bench/bench_kill_resume.py [--seeds 0 1 2] [--moments ...] [--corpus DIR]

For each seed: one uninterrupted reference run (`quads compress --recipe quads --bits 4` on a tiny synthetic
corpus with a tiny student and schedule, then `quads export`), then for each moment a fresh run folder and cache
that is killed with SIGKILL at that moment, and rerun with `--resume` (the export simply rerun). Asserted:

- the final student (`student.pt`: every weight and codebook tensor) equals the reference bit for bit;
- the exported model file equals the reference's byte for byte;
- no temporary file (`.*.tmp`) is left in the run folder or beside the model file.

Moments (a child process wraps one function and SIGKILLs itself at its n-th call):

| moment | where the kill lands |
|---|---|
| teacher | the teacher cache, after the 3rd stored utterance embedding (`FeatureCache.put` on the teacher cache) |
| epoch | the middle of the first epoch of the fp32 distillation (the 3rd `AdamW.step`) |
| quantize | inside a quantize stage of the QUADS schedule (the 2nd `CodebookQuantizer.update_centroids`) |
| checkpoint | a checkpoint fully written to its temporary file, not yet renamed (the 2nd `os.replace` onto `last.pt`) |
| export | the packed file written to its temporary file, not yet renamed (`os.replace` onto the `.quads` file) |

CPU cost: about one minute per (seed, moment) on a 2-core machine with the defaults; `--seeds 0 --moments
checkpoint export` is the reduced form.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MOMENTS = ("teacher", "epoch", "quantize", "checkpoint", "export")
SETTINGS = ["student.encoder=conv-50k", "teacher.head=linear", "teacher.epochs=2", "optim.epochs=2",
            "optim.batch_size=16", "quant.epochs=2", "quant.schedule=[[distill, 1], [quantize, 1]]",
            "quant.kmeans_iterations=5"]

# Runs the quads CLI with one function wrapped to SIGKILL this process at its n-th matching call.
KILLER = textwrap.dedent("""
    import os, signal, sys, importlib
    module_name, attribute, count, match = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    owner_name, _, method = attribute.rpartition(".")
    owner = importlib.import_module(module_name)
    for part in filter(None, owner_name.split(".")):
        owner = getattr(owner, part)
    original = getattr(owner, method)
    calls = [0]
    def wrapped(*args, **kwargs):
        if match == "*" or any(match in str(a) for a in list(args) + [getattr(args[0], "directory", "")]):
            calls[0] += 1
            if calls[0] == count:
                os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)
    setattr(owner, method, wrapped)
    from quads.cli import main
    sys.exit(main(sys.argv[5:]))
""")

KILL_POINTS = {  # moment -> (module, attribute, n-th call, argument substring that selects the calls)
    "teacher": ("quads.features", "FeatureCache.put", 3, "teacher"),
    "epoch": ("torch.optim", "AdamW.step", 3, "*"),
    "quantize": ("quads.compression.quantize", "CodebookQuantizer.update_centroids", 2, "*"),
    "checkpoint": ("os", "replace", 2, "last.pt"),
    "export": ("os", "replace", 1, ".quads"),
}


def quads(args: list[str], *, kill: str | None = None) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    if kill is None:
        command = [sys.executable, "-m", "quads.cli", *args]
    else:
        command = [sys.executable, "-c", KILLER, *map(str, KILL_POINTS[kill]), *args]
    return subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          check=False).returncode


def compress_args(corpus: Path, run: Path, cache: Path, seed: int) -> list[str]:
    settings = [*SETTINGS, f"seed={seed}", f"data.path={corpus}", f"data.cache_dir={cache}"]
    return ["compress", "--recipe", "quads", "--bits", "4", "--out", str(run), "--quiet",
            *[item for setting in settings for item in ("--set", setting)]]


def run_once(corpus: Path, work: Path, seed: int, kill: str | None) -> tuple[Path, Path, int]:
    """A run folder and its exported model; with `kill`, killed at that moment and resumed. Returns the exit
    status of the killed attempt (-9 when the kill landed)."""
    run, cache, model = work / "run", work / "cache", work / "model.quads"
    killed = 0
    if kill != "export":
        killed = quads(compress_args(corpus, run, cache, seed), kill=kill)
        assert quads([*compress_args(corpus, run, cache, seed), "--resume"]) == 0, f"resume failed ({kill})"
    else:
        assert quads(compress_args(corpus, run, cache, seed)) == 0
    export = ["export", str(run), "--out", str(model)]
    if kill == "export":
        killed = quads(export, kill=kill)
    assert quads(export) == 0, "export failed"
    return run, model, killed


def same_student(a: Path, b: Path) -> bool:
    import torch

    first, second = (torch.load(p / "student.pt", weights_only=True) for p in (a, b))

    def equal(x, y) -> bool:
        if isinstance(x, torch.Tensor):
            return isinstance(y, torch.Tensor) and x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
        if isinstance(x, dict):
            return isinstance(y, dict) and x.keys() == y.keys() and all(equal(x[k], y[k]) for k in x)
        if isinstance(x, (list, tuple)):
            return isinstance(y, (list, tuple)) and len(x) == len(y) and all(map(equal, x, y))
        return x == y

    return all(equal(first[key], second[key]) for key in ("model", "quantizer", "labels", "architecture"))


def temp_files(*folders: Path) -> list[Path]:
    return [path for folder in folders for path in folder.rglob(".*.tmp")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--moments", nargs="+", choices=MOMENTS, default=list(MOMENTS))
    parser.add_argument("--corpus", type=Path, help="an FSC-layout corpus (default: a tiny synthetic one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        corpus = args.corpus
        if corpus is None:
            corpus = scratch / "corpus"
            assert quads(["synth", "--out", str(corpus), "--speakers", "7", "--per-intent", "1", "--jobs", "2",
                          "--quiet"]) == 0, "synth failed"
        failures = 0
        for seed in args.seeds:
            started = time.perf_counter()
            reference_run, reference_model, _ = run_once(corpus, scratch / f"ref-{seed}", seed, None)
            print(f"seed {seed}: reference run in {time.perf_counter() - started:.0f} s")
            for moment in args.moments:
                work = scratch / f"{moment}-{seed}"
                run, model, status = run_once(corpus, work, seed, moment)
                identical = same_student(reference_run, run)
                same_file = model.read_bytes() == reference_model.read_bytes()
                left = temp_files(run, model.parent)
                ok = identical and same_file and not left and status == -9
                failures += not ok
                print(f"  {moment:10s} killed: {'yes' if status == -9 else f'no (exit {status})':12s} "
                      f"student bit-identical: {identical}  model file identical: {same_file}  "
                      f"temp files left: {len(left)}  {'OK' if ok else 'FAIL'}")
        print(f"{len(args.seeds) * len(args.moments) - failures} of {len(args.seeds) * len(args.moments)} "
              "(seed, moment) pairs bit-identical after kill -9 and --resume")
        sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
