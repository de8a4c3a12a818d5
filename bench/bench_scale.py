"""Growth with corpus size: training time per utterance, peak memory and cache disk at 1K, 10K and 100K utterances.

    .venv/bin/python bench/bench_scale.py [--sizes 1000 10000 100000] [--steps 25] [--out results/bench_scale]
    .venv/bin/python bench/bench_scale.py --quick        # 1K and 10K, 10 steps, no 3K comparison (~2 min)
    .venv/bin/python bench/bench_scale.py --sizes 3000 --repeats 3   # the in-memory comparison alone, medians

Corpora are built by FEATURE-LEVEL REPLICATION of the built-in synthetic command corpus, not by synthesis:
utterance i of a size-N corpus has the log-mels of train utterance (i mod 1,984) of `commands-v2` (real
features from the feature cache, written again into the N-utterance store, so the feature shards are really
N utterances on disk). Its teacher targets have a Whisper-large frame width (1280-d, 50 frames per second,
seeded random values: only their size matters here); their shards are written once for the 1,984 base
utterances and each size's store points into them (`quads.training.shards.alias_store`), because 100K utterances of
1280-d float32 frames are ~60 GB. The disk column gives both: bytes written and the size the same corpus of
distinct utterances would take (what `--dry-run` plans).

Each size then trains the default student (`whisper-tiny.en-2l`, frame-level distillation to the 1280-d frames
through `quads.training.loop.fit`, batch 16, one thread) in a fresh process, for `--steps` steps of a real epoch order
over the whole corpus (`fit`'s `global_batches` is cut to its first `--steps` batches; a full 100K epoch of
this student takes hours on 2 cores). Reported: seconds per step and per utterance (steps after the first),
peak RSS of that process (`resource.getrusage`), seconds to write the feature store. At 3K utterances the same
run also goes through today's in-memory path (every item a tensor in an `ExampleSet`, frame targets a list)
for the throughput ratio. Results: OUT/results.json, OUT/results.md and the log-log plot OUT/scale.png.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

BASE_TRAIN = 1984  # train utterances of the built-in corpus
TEACHER_WIDTH = 1280  # Whisper-large
VALID_ITEMS = 64
COMPARE_AT = 3000
RSS_TARGET = 1.2  # peak RSS, smallest to largest corpus (issue 12's acceptance)
TIME_TARGET = 1.3  # seconds per utterance, the same


def base_features() -> list[torch.Tensor]:
    """Log-mels [80, T] of the built-in corpus's train split, from the feature cache (computed if absent)."""
    from quads.audio import FrontEndConfig
    from quads.config import DataConfig
    from quads.features import FeatureCache, compute_features
    from quads.training.experiment import cache_root, load_training_corpus

    corpus = load_training_corpus(DataConfig(), progress=False)
    cache = FeatureCache(cache_root() / "features")
    return compute_features(corpus.splits["train"], FrontEndConfig(n_mels=80), cache, progress=False)


def teacher_frames_for(item: torch.Tensor, seed: int) -> torch.Tensor:
    """Seeded 1280-d frames at half the log-mel rate (Whisper's encoder stride): the size of a large teacher's."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(max(1, item.shape[1] // 2), TEACHER_WIDTH, generator=generator)


def build(out: Path, sizes: list[int]) -> dict:
    """Write the base teacher stores once and each size's feature store; returns bytes and seconds per size."""
    from quads.training.shards import alias_store, build_store, open_or_build

    features = base_features()
    labels = [i % 31 for i in range(BASE_TRAIN)]
    teacher = open_or_build(out / "stores" / "teacher-base", BASE_TRAIN,
                            lambda p: [teacher_frames_for(features[i], i) for i in p], labels, [], time_dim=0)
    pooled = open_or_build(out / "stores" / "pooled-base", BASE_TRAIN,
                           lambda p: [teacher_frames_for(features[i], i).mean(0, keepdim=True) for i in p], labels,
                           [], time_dim=0)
    open_or_build(out / "stores" / "valid", VALID_ITEMS, lambda p: [features[i] for i in p], labels[:VALID_ITEMS],
                  [], time_dim=1, dtype="float16")
    report = {}
    for size in sizes:
        folder = out / "stores" / f"n{size}"
        replicated = [i % BASE_TRAIN for i in range(size)]
        started = time.perf_counter()
        if not (folder / "features" / "index.json").exists():
            build_store(folder / "features", size, lambda p, r=replicated: [features[r[i]] for i in p],
                        [labels[i] for i in replicated], [], time_dim=1, dtype="float16")
        seconds = time.perf_counter() - started
        store_teacher = alias_store(teacher, folder / "teacher", replicated)
        alias_store(pooled, folder / "pooled", replicated)
        feature_bytes = sum(p.stat().st_size for p in (folder / "features").glob("shard-*.bin"))
        teacher_logical = int(store_teacher.lengths.sum()) * TEACHER_WIDTH * 4
        report[size] = {"feature_store_seconds": seconds, "feature_bytes": feature_bytes,
                        "teacher_bytes_planned": teacher_logical + size * TEACHER_WIDTH * 4,
                        "teacher_bytes_written": teacher.disk_bytes + pooled.disk_bytes}
    return report


def train(out: Path, size: int, steps: int, path: str, workers: int) -> dict:
    """Train the default student for `steps` steps on the size-`size` stores; runs in its own process."""
    import quads.training.loop as train_module
    from quads.commands.compress import make_student
    from quads.config import DistillConfig, load_config
    from quads.training.batches import ExampleSet
    from quads.training.loop import Stage, TeacherTargets, fit
    from quads.training.losses import distillation_weights
    from quads.training.shards import ShardedExamples, StandardizedItems, StoreRows

    torch.set_num_threads(1)
    folder = out / "stores" / f"n{size}"
    train_set = ShardedExamples(folder / "features")
    frames = ShardedExamples(folder / "teacher")
    pooled = ShardedExamples(folder / "pooled")
    valid_set = ShardedExamples(out / "stores" / "valid")
    zero, one = torch.zeros(TEACHER_WIDTH), torch.ones(TEACHER_WIDTH)
    targets = TeacherTargets(embeddings=StoreRows(pooled, 0, TEACHER_WIDTH), frames=StandardizedItems(
        frames.items, zero, one))
    if path == "memory":  # today's path: every item a tensor, the frame targets a list of float16 tensors
        train_set = ExampleSet([train_set.item(i) for i in range(size)], train_set.labels, time_dim=1)
        targets = TeacherTargets(embeddings=pooled.collate(range(size)).inputs[:, 0],
                                 frames=[targets.frames[i] for i in range(size)])
    config = load_config(None)
    real_batches, real_loader = train_module.global_batches, train_module.batch_loader
    stamps: list[float] = []

    def first_batches(*args, **kwargs):
        return real_batches(*args, **kwargs)[:steps]

    def timed_loader(*args, **kwargs):
        for batch in real_loader(*args, **kwargs):
            stamps.append(time.perf_counter())
            yield batch
        stamps.append(time.perf_counter())

    train_module.global_batches, train_module.batch_loader = first_batches, timed_loader
    classifier = make_student(config, [f"intent{i}" for i in range(31)])  # a flat label set: one slot
    stage = Stage("distill", 1, distillation_weights(DistillConfig(alpha=0.5, target="frames")))
    fit(classifier, train_set, valid_set, [stage], config.optim, out / "runs" / f"{path}-{size}", seed=0,
        teacher=targets, progress=False, loader_workers=workers, distributed=False)
    step_seconds = (stamps[-1] - stamps[1]) / (len(stamps) - 2)  # the first step (warm-up) left out
    return {"size": size, "path": path, "steps": steps, "step_seconds": step_seconds,
            "seconds_per_utterance": step_seconds / config.optim.batch_size,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def run_child(out: Path, size: int, steps: int, path: str, workers: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, __file__, "--child", path, "--size", str(size), "--steps", str(steps),
               "--workers", str(workers), "--out", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def plot(rows: list[dict], comparison: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [row["size"] for row in rows]
    figure, axes = plt.subplots(1, 3, figsize=(13, 4))
    series = [("seconds per utterance (training step)", [row["seconds_per_utterance"] for row in rows]),
              ("peak RSS of training (MB)", [row["peak_rss_bytes"] / 1e6 for row in rows]),
              ("cache disk (GB)", [row["feature_bytes"] / 1e9 for row in rows])]
    for index, (axis, (title, values)) in enumerate(zip(axes, series, strict=True)):
        axis.loglog(sizes, values, "o-", label="streaming (measured)" if index < 2 else "feature shards (written)")
        if index < 2:  # a decade either side, so that flat reads as flat
            axis.set_ylim(min(values) / 10, max(values) * 10)
        if index < 2 and comparison:
            key = "seconds_per_utterance" if index == 0 else "peak_rss_bytes"
            scale = 1 if index == 0 else 1e-6
            axis.loglog([comparison["size"]], [comparison["memory"][key] * scale], "r^",
                        label="in-memory path (measured)")
            axis.legend(fontsize=8)
        if title.startswith("cache"):
            axis.loglog(sizes, [row["teacher_bytes_planned"] / 1e9 for row in rows], "s--",
                        label="teacher frames, 1280-d float32 (planned)")
            axis.legend(fontsize=8)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("utterances")
        axis.grid(True, which="both", alpha=0.3)
    figure.suptitle("quads streaming examples: growth with corpus size (default student, 1280-d teacher frames)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--steps", type=int, default=25, help="training steps timed per size (default 25)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0)")
    parser.add_argument("--quick", action="store_true", help="1K and 10K utterances, 10 steps, no comparison")
    parser.add_argument("--no-compare", action="store_true", help="skip the in-memory comparison at 3K")
    parser.add_argument("--check", action="store_true", help="exit 1 when peak RSS or time per utterance grows "
                        f"more than {RSS_TARGET}x / {TIME_TARGET}x from the smallest to the largest size")
    parser.add_argument("--repeats", type=int, default=1, help="alternated runs of each path at 3K (median)")
    parser.add_argument("--out", type=Path, default=Path("results/bench_scale"))
    parser.add_argument("--keep", action="store_true", help="keep the stores (several GB at 100K)")
    parser.add_argument("--child", choices=("streaming", "memory"), help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(train(args.out, args.size, args.steps, args.child, args.workers)))
        return
    if args.quick:
        args.sizes, args.steps, args.no_compare = [1000, 10000], 10, True
    args.out.mkdir(parents=True, exist_ok=True)
    compare = [] if args.no_compare else [COMPARE_AT]
    started = time.perf_counter()
    built = build(args.out, sorted(set(args.sizes + compare)))
    rows = []
    for size in args.sizes:
        row = {**run_child(args.out, size, args.steps, "streaming", args.workers), **built[size]}
        rows.append(row)
        print(f"{size:>7,} utterances: {row['step_seconds']:.3f} s/step, "
              f"{1e3 * row['seconds_per_utterance']:.1f} ms/utt, "
              f"peak RSS {row['peak_rss_bytes'] / 1e6:.0f} MB, feature shards {row['feature_bytes'] / 1e9:.2f} GB "
              f"(written in {row['feature_store_seconds']:.1f} s), teacher frames planned "
              f"{row['teacher_bytes_planned'] / 1e9:.2f} GB", flush=True)
    comparison = {}
    for size in compare:  # alternated, medians: another job on the machine makes single runs noisy
        runs = {"memory": [], "streaming": []}
        for _ in range(args.repeats):
            for path in runs:
                runs[path].append(run_child(args.out, size, args.steps, path, args.workers))
        memory, streaming = (sorted(runs[path], key=lambda r: r["step_seconds"])[args.repeats // 2] for path in runs)
        comparison = {"size": size, "memory": memory, "streaming": streaming, "repeats": args.repeats,
                      "throughput_ratio": memory["step_seconds"] / streaming["step_seconds"],
                      "all_step_seconds": {path: [r["step_seconds"] for r in rs] for path, rs in runs.items()}}
        print(f"{size:,} utterances: in-memory {memory['step_seconds']:.3f} s/step (peak RSS "
              f"{memory['peak_rss_bytes'] / 1e6:.0f} MB), streaming {streaming['step_seconds']:.3f} s/step (peak RSS "
              f"{streaming['peak_rss_bytes'] / 1e6:.0f} MB): throughput ratio {comparison['throughput_ratio']:.2f}")
    first, last = rows[0], rows[-1]
    growth = {"rss": last["peak_rss_bytes"] / first["peak_rss_bytes"],
              "seconds_per_utterance": last["seconds_per_utterance"] / first["seconds_per_utterance"]}
    print(f"{first['size']:,} -> {last['size']:,}: peak RSS x{growth['rss']:.3f} (target <= {RSS_TARGET}), time per "
          f"utterance x{growth['seconds_per_utterance']:.3f} (target <= {TIME_TARGET}); "
          f"{(time.perf_counter() - started) / 60:.1f} min in all")
    failed = growth["rss"] > RSS_TARGET or growth["seconds_per_utterance"] > TIME_TARGET
    (args.out / "results.json").write_text(json.dumps({"rows": rows, "comparison": comparison, "growth": growth,
                                                       "steps": args.steps, "workers": args.workers}, indent=1))
    lines = ["| utterances | s/step | ms/utterance | peak RSS (MB) | feature shards (GB) | teacher frames (GB) |"
             "\n|---|---|---|---|---|---|"]
    lines += [f"| {r['size']:,} | {r['step_seconds']:.3f} | {1e3 * r['seconds_per_utterance']:.1f} | "
              f"{r['peak_rss_bytes'] / 1e6:.0f} | {r['feature_bytes'] / 1e9:.2f} | "
              f"{r['teacher_bytes_planned'] / 1e9:.1f} |" for r in rows]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    plot(rows, comparison, args.out / "scale.png")
    if not args.keep:
        shutil.rmtree(args.out / "stores", ignore_errors=True)
        shutil.rmtree(args.out / "runs", ignore_errors=True)
    print(f"results in {args.out}/results.md, results.json, scale.png")
    if args.check and failed:
        raise SystemExit("growth above target")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
