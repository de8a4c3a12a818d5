"""Distillation with the teacher cache versus recomputing the frozen teacher: per-epoch cost and a 20-epoch run.

    .venv/bin/python bench/bench_teacher_cache.py [--count 300] [--repeats 3] [--epochs 20] [--threads 1]

Takes `count` training utterances of the built-in synthetic corpus (`quads.training.experiment.default_corpus_dir()`;
synthesised into a temporary folder with 8 speakers if absent, or `--corpus DIR`) and measures, in one run:

- teacher, no cache: one `speech_embedding` pass over them (`teacher_frame_embeddings(..., cache=None)`,
  audio decoding included): what every epoch would pay if the teacher ran inside the training loop;
- teacher, cold cache: the same pass writing a fresh `TeacherCache` (paid once per machine);
- teacher, warm cache: reading them back through a new `TeacherCache` object (what a later run pays);
- student epoch: one `quads.training.loop.fit` epoch of a `conv-200k` student on the same utterances' log-mels with
  the distillation loss (0.5 CE + 0.5 L1 to the pooled teacher embedding; batch 16), including fit's
  per-epoch validation on 32 utterances and its checkpoint write.

Times are medians over `--repeats` (the cold fill runs once), all with `--threads` torch / onnxruntime threads.
The projection for an `--epochs` run: teacher recomputed every epoch = epochs x (teacher + student epoch);
cached = one cold (or warm) teacher pass + epochs x student epoch. quads itself never runs the teacher per
epoch: it keeps the cached targets in memory for the whole run. Timings come from a shared, loaded 2-core
machine; the ratios are the figures to read.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import soundfile
import torch

from quads.audio import FrontEndConfig
from quads.config import OptimConfig
from quads.data import Utterance, open_corpus
from quads.features import compute_features
from quads.models import build_student, build_teacher
from quads.training.batches import ExampleSet
from quads.training.experiment import default_corpus_dir
from quads.training.loop import Stage, TeacherTargets, fit
from quads.training.losses import LossWeights
from quads.training.teacher_cache import TeacherCache, TeacherCacheStats, teacher_frame_embeddings


def corpus_utterances(corpus_dir: Path | None, scratch: Path, count: int) -> tuple[list[Utterance], list[str], str]:
    """`count` train utterances spread evenly over the train split (so over speakers and intents)."""
    directory = corpus_dir or default_corpus_dir()
    source = str(directory)
    if not (directory / "data" / "train_data.csv").exists():
        from quads.synth import synthesize_corpus

        directory = scratch / "corpus"
        source = f"synthesised now into a temporary folder (8 speakers); {default_corpus_dir()} is absent"
        synthesize_corpus(directory, speakers=8, progress=False)
    corpus = open_corpus(directory)
    train = corpus.splits["train"]
    if count > len(train):
        raise SystemExit(f"--count {count}: the corpus has only {len(train)} train utterances")
    chosen = [train[index * len(train) // count] for index in range(count)]
    return chosen, corpus.label_map.labels, source


def median_seconds(action: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="utterances (default 300)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats, median reported (default 3)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of the projected distillation run (default 20)")
    parser.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads (default 1)")
    parser.add_argument("--corpus", type=Path, help="FSC-layout corpus folder (default: the built-in synthetic one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        utterances, labels, source = corpus_utterances(args.corpus, scratch, args.count)
        seconds = sum(soundfile.info(str(u.path)).duration for u in utterances)
        teacher = build_teacher("speech_embedding", threads=args.threads)

        def teacher_pass(cache: TeacherCache | None, stats: TeacherCacheStats | None = None) -> list[torch.Tensor]:
            return teacher_frame_embeddings(utterances, teacher, cache, progress=False, stats=stats)

        no_cache = median_seconds(lambda: teacher_pass(None), args.repeats)
        started = time.perf_counter()
        reference = teacher_pass(TeacherCache(scratch / "teacher"))
        cold = time.perf_counter() - started
        warm_stats = TeacherCacheStats()
        warm = median_seconds(lambda: teacher_pass(TeacherCache(scratch / "teacher"), warm_stats), args.repeats)
        assert warm_stats.hits == warm_stats.utterances == args.repeats * len(utterances), warm_stats
        assert warm_stats.teacher_passes == 0, warm_stats
        again = teacher_pass(TeacherCache(scratch / "teacher"))
        assert all(torch.equal(a, b) for a, b in zip(reference, again, strict=True)), "cache changed the embeddings"
        cache_bytes = sum(path.stat().st_size for path in (scratch / "teacher").rglob("*") if path.is_file())

        label_index = {label: index for index, label in enumerate(labels)}
        features = compute_features(utterances, FrontEndConfig(n_mels=80), None, progress=False)
        train_set = ExampleSet(features, [label_index[u.label] for u in utterances], time_dim=1)
        valid_set = ExampleSet(features[:32], train_set.labels[:32], time_dim=1)
        targets = TeacherTargets(torch.stack([frames.mean(0) for frames in reference]))
        stage = Stage("distill", 1, LossWeights(ce=0.5, embedding=0.5))
        optim = OptimConfig(epochs=1, batch_size=16)
        runs = iter(range(args.repeats))

        def student_epoch() -> None:
            torch.manual_seed(0)
            student = build_student("conv-200k", len(labels), n_mels=80)
            fit(student, train_set, valid_set, [stage], optim, scratch / f"run{next(runs)}", teacher=targets,
                progress=False, distributed=False)

        student = median_seconds(student_epoch, args.repeats)

    epochs, count = args.epochs, args.count
    recomputed = epochs * (no_cache + student)
    cached_cold = cold + epochs * student
    cached_warm = warm + epochs * student
    print(f"{count} utterances ({seconds / 60:.1f} min of audio) from {source}")
    print(f"teacher speech_embedding (onnxruntime), student conv-200k, {args.threads} thread(s), "
          f"median of {args.repeats}; shared loaded 2-core machine: absolute times are noisy, read the ratios")
    print()
    print(f"{'per epoch':<42} {'seconds':>8} {'utt/s':>8} {'x student epoch':>16}")
    for name, value in (("teacher, no cache (recomputed)", no_cache), ("teacher, cold cache (compute + write)", cold),
                        ("teacher, warm cache (read)", warm), ("student epoch (distillation, fit)", student)):
        print(f"{name:<42} {value:>8.2f} {count / value:>8.1f} {value / student:>16.2f}")
    print(f"teacher cost per epoch, no cache / warm cache: {no_cache / warm:.1f}x "
          f"(cache {cache_bytes / 2**20:.1f} MiB on disk)")
    print()
    title = f"projected {epochs}-epoch distillation run"
    print(f"{title:<37} {'teacher passes':>16} {'seconds':>8} {'recomputed / this':>18}")
    for name, passes, value in (("teacher recomputed every epoch", epochs * count, recomputed),
                                ("teacher cached once (cold cache)", count, cached_cold),
                                ("teacher cached (warm, later runs)", 0, cached_warm)):
        print(f"{name:<37} {passes:>16} {value:>8.1f} {recomputed / value:>17.2f}x")


if __name__ == "__main__":
    main()
