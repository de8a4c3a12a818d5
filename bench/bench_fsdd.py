"""Real-speech check: train on synthetic spoken digits only, test on real human recordings (FSDD).

Synthesises the ten digits with the built-in synthesiser (espeak-ng + flite voices), pre-tunes the
speech_embedding teacher and trains the student on that synthetic corpus, compresses it with QUADS at 4 and 2
bits, then scores the teacher and every packed model file on the Free Spoken Digit Dataset (3,000 real
recordings, 6 speakers, 8 kHz resampled to 16 kHz), which no model saw.

    .venv/bin/python bench/bench_fsdd.py --out runs/fsdd            # skipped cleanly where FSDD is absent
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import torch

from quads.batches import ExampleSet
from quads.config import load_config
from quads.data import load_manifest
from quads.evaluate import evaluate_model_file, score_predictions
from quads.experiment import cache_root
from quads.grid import Cell, run_grid
from quads.models import build_teacher
from quads.pretune import needs_frames
from quads.synth import synthesize_corpus
from quads.teacher_cache import TeacherCache, teacher_frame_embeddings
from quads.train import predict_logits

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def default_fsdd() -> Path:
    shared = os.environ.get("QUADS_SHARED_DATA")
    root = Path(shared) if shared else Path(__file__).resolve().parents[2] / "shared" / "data"
    return root / "fsdd" / "recordings"


def write_phrase_table(path: Path) -> None:
    """Each digit said plainly, as a statement and as an exclamation: different prosody from the same voice."""
    lines = ["transcription\tintent"]
    for index, word in enumerate(DIGITS):
        lines += [f"{word}\t{index}", f"{word.capitalize()}.\t{index}", f"{word}!\t{index}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_fsdd_manifest(recordings: Path, path: Path, limit: int = 0) -> int:
    files = sorted(recordings.glob("*.wav"))
    if limit:
        files = files[:: max(1, len(files) // limit)][:limit]
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "label", "speaker"])
        for wav in files:
            digit, speaker, _ = wav.stem.split("_")
            writer.writerow([str(wav), digit, speaker])
    return len(files)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/fsdd"))
    parser.add_argument("--fsdd", type=Path, default=default_fsdd(), help="FSDD recordings folder")
    parser.add_argument("--speakers", type=int, default=48, help="synthetic speakers")
    parser.add_argument("--no-augment", action="store_true", help="clean TTS (no noise, silence, gain, speed)")
    parser.add_argument("--fsdd-limit", type=int, default=0, help="use only N recordings (0 = all 3,000)")
    parser.add_argument("--config", type=Path, help="YAML recipe (default: the built-in settings)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if not args.fsdd.is_dir():
        print(f"skipped: no FSDD recordings at {args.fsdd}")
        return 0
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    table = args.out / "digits.tsv"
    write_phrase_table(table)
    corpus_dir = args.out / "synthetic-digits"
    report = synthesize_corpus(corpus_dir, table, speakers=args.speakers, seed=0, utterances_per_intent=3,
                               augment=not args.no_augment)
    print(report.summary())
    manifest = args.out / "fsdd.csv"
    count = write_fsdd_manifest(args.fsdd, manifest, args.fsdd_limit)

    config = load_config(args.config, [f"data.path={corpus_dir}", *args.overrides])
    cells = [Cell("distill", 32, config.seed), Cell("quads", 4, config.seed), Cell("quads", 2, config.seed)]
    rows, prepared = run_grid(config, cells, args.out / "grid")

    teacher = build_teacher(config.teacher.spec)
    fsdd = load_manifest(manifest, prepared.corpus.label_map).splits["test"]
    frames = teacher_frame_embeddings(fsdd, teacher, TeacherCache(cache_root(config.data) / "teacher"),
                                      pooled=not needs_frames(config))
    labels = [prepared.corpus.label_map.encode(u.label) for u in fsdd]
    predicted = predict_logits(prepared.teacher.head, ExampleSet(frames, labels, time_dim=0)).argmax(-1).tolist()
    teacher_accuracy, teacher_f1, *_ = score_predictions(labels, predicted, prepared.teacher.labels)

    print(f"\nFSDD ({count} real recordings, 6 speakers); models trained on synthetic speech only")
    print("| model | bits | synthetic test acc | FSDD acc | FSDD macro-F1 |")
    print("|---|---|---|---|---|")
    print(f"| teacher ({config.teacher.spec} + {config.teacher.head} head) | 32 | {rows[0]['accuracy']:.3f} | "
          f"{teacher_accuracy:.3f} | {teacher_f1:.3f} |")
    for row in rows[1:]:
        evaluation = evaluate_model_file(row["model_file"], manifest, "test", latency_samples=0, progress=False,
                                         cache_dir=cache_root(config.data) / "features")
        print(f"| {row['method']} | {row['bits']} | {row['accuracy']:.3f} | {evaluation.accuracy:.3f} | "
              f"{evaluation.f1:.3f} |")
    print(f"wall time {time.perf_counter() - started:.0f} s, torch threads {torch.get_num_threads()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
