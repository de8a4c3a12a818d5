"""Real human speech in the report: models trained on synthetic spoken digits, scored on FSDD recordings.

The Free Spoken Digit Dataset (3,000 recordings, 6 speakers, 8 kHz) is reference data that users and CI may
have beside the repository (`../shared/data/fsdd/recordings`, or `$QUADS_SHARED_DATA/fsdd/recordings`). When
it is there, `quads demo` (and `bench/bench_fsdd.py`) synthesise the ten digits with the built-in voices,
train the teacher head and the students on that synthetic corpus only, and score each packed model file on
the real recordings. No model ever hears FSDD in training. Each file's scores are kept in `OUT/fsdd-scores.json`
under the hashes of the file and of the recordings list, so a rerun scores only new or changed files.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from quads.cache_dir import cache_root
from quads.commands.evaluate import evaluate_model_file, score_predictions
from quads.commands.grid import Cell, run_grid
from quads.config import RunConfig, scale_epochs
from quads.data import load_manifest
from quads.errors import ConfigError
from quads.features import file_sha256
from quads.synth import synthesize_corpus
from quads.synth.augment import AUGMENT_LEVELS
from quads.synth.corpus import DEFAULT_PIPER_SPEAKERS
from quads.training.batches import ExampleSet
from quads.training.experiment import write_json
from quads.training.inference import predict_logits
from quads.training.pretune import needs_frames
from quads.training.teacher_cache import TeacherCache, teacher_frame_embeddings

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# The digit corpus's cache folder per augmentation level (v1 had no room or microphone; v2 has both).
DIGIT_CORPORA = {"room": "digits-v3", "light": "digits-v1", "none": "digits-v1-clean"}
PIPER_DIGIT_CORPORA = ("room",)  # the levels whose corpus adds the piper voice's speakers (v1 ones predate it)
UTTERANCES_PER_DIGIT = 3  # per synthetic speaker: 48 x 10 x 3 = 1,440 utterances
# The digits have a quarter of the built-in commands corpus's train clips (1,110 against 4,588), so they train this
# many times the configured epochs: the length their FSDD scores were measured at (bench/README, "Twice the
# training clips"). Warm-up and teacher.unfreeze_epochs stay as configured.
DIGIT_EPOCH_FACTOR = 2
SCORES_FILE = "fsdd-scores.json"  # "model sha256:recordings-list sha256:SCORING" -> [FSDD accuracy, macro-F1]
SCORING = "scored-window-1"  # how files are scored (`quads.runtime.speech_window`): a change rescores them


def fsdd_candidates() -> list[Path]:
    """Where FSDD's recordings are looked for, in order: $QUADS_SHARED_DATA, then ../shared/data beside the
    current folder and beside the source tree."""
    roots = []
    if os.environ.get("QUADS_SHARED_DATA"):
        roots.append(Path(os.environ["QUADS_SHARED_DATA"]))
    roots += [Path.cwd().parent / "shared" / "data", Path(__file__).resolve().parents[3] / "shared" / "data"]
    return [root / "fsdd" / "recordings" for root in dict.fromkeys(roots)]


def find_fsdd() -> tuple[Path | None, list[Path]]:
    """(the FSDD recordings folder or None, every folder that was looked at)."""
    candidates = fsdd_candidates()
    return next((path for path in candidates if path.is_dir() and any(path.glob("*.wav"))), None), candidates


def fsdd_not_found(given: Path | None, looked: list[Path]) -> str | None:
    """None when `given` is a folder, else the line a benchmark prints before skipping: where it looked."""
    if given is not None and given.is_dir():
        return None
    places = [str(given)] if given else [str(path) for path in looked]
    return f"skipped: no FSDD recordings; looked in {', '.join(places)} (set QUADS_SHARED_DATA or --fsdd)"


def write_digit_phrases(path: Path) -> None:
    """Each digit said plainly, as a statement and as an exclamation: different prosody from the same voice."""
    lines = ["transcription\tintent"]
    for index, word in enumerate(DIGITS):
        lines += [f"{word}\t{index}", f"{word.capitalize()}.\t{index}", f"{word}!\t{index}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_fsdd_manifest(recordings: Path, path: Path, limit: int = 0) -> int:
    """A quads manifest (path,label,speaker) of FSDD's `{digit}_{speaker}_{index}.wav` files; all in `test`."""
    files = sorted(recordings.glob("*.wav"))
    if limit:
        files = files[:: max(1, len(files) // limit)][:limit]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "label", "speaker"])
        for wav in files:
            digit, speaker, _ = wav.stem.split("_")
            writer.writerow([str(wav), digit, speaker])
    return len(files)


def digit_corpus(config: RunConfig, *, speakers: int = 48, augment: str = "room", kokoro_speakers: int = 0,
                 progress: bool = True) -> Path:
    """The synthetic ten-digit corpus (synthesised once into the cache); `augment` is a level of
    `quads.synth.augment.AUGMENT_LEVELS`: room (default), light or none; `kokoro_speakers` settings of the
    Kokoro voices join train and valid (a corpus of its own)."""
    if augment not in AUGMENT_LEVELS:
        raise ConfigError(f"augmentation level {augment!r}: choose one of {', '.join(AUGMENT_LEVELS)}")
    name = (DIGIT_CORPORA[augment] + ("" if speakers == 48 else f"-{speakers}spk")
            + (f"-kokoro{kokoro_speakers}" if kokoro_speakers else ""))
    directory = cache_root(config.data) / "corpora" / name
    table = directory.parent / "digits-v1.tsv"
    write_digit_phrases(table)
    augment_config = AUGMENT_LEVELS[augment]
    piper = DEFAULT_PIPER_SPEAKERS if augment in PIPER_DIGIT_CORPORA else 0
    synthesize_corpus(directory, table, speakers=speakers, piper_speakers=piper, kokoro_speakers=kokoro_speakers,
                      seed=0, utterances_per_intent=UTTERANCES_PER_DIGIT,
                      augment=augment_config if augment_config is not None else False, progress=progress)
    return directory


def fsdd_rows(config: RunConfig, cells: list[Cell], out_dir: str | Path, recordings: Path, *, limit: int = 0,
              speakers: int = 48, augment: str = "room", kokoro_speakers: int = 0,
              progress: bool = True) -> list[dict[str, Any]]:
    """Train `cells` on synthetic digits with `config` (its epochs times DIGIT_EPOCH_FACTOR), then score the
    teacher and every model file on FSDD.

    Rows carry the synthetic test accuracy (`accuracy`) and the real-speech scores (`fsdd_accuracy`,
    `fsdd_f1`); the first row is the teacher's.
    """
    out_dir = Path(out_dir)
    corpus_dir = digit_corpus(config, speakers=speakers, augment=augment, kokoro_speakers=kokoro_speakers,
                              progress=progress)
    digits_config = scale_epochs(replace(config, data=replace(config.data, path=str(corpus_dir))), DIGIT_EPOCH_FACTOR)
    rows, prepared = run_grid(digits_config, cells, out_dir / "grid", progress=progress, latency_samples=0)
    manifest = out_dir / "fsdd.csv"
    write_fsdd_manifest(recordings, manifest, limit)
    fsdd = load_manifest(manifest, prepared.corpus.label_map).splits["test"]
    # The teacher the grid distilled from (with teacher.unfreeze, the fine-tuned one), not a fresh build.
    frames = teacher_frame_embeddings(fsdd, prepared.teacher_encoder, TeacherCache(cache_root(config.data) / "teacher"),
                                      pooled=not needs_frames(config), progress=progress)
    labels = [prepared.corpus.label_map.encode(u.label) for u in fsdd]
    predicted = predict_logits(prepared.teacher.head, ExampleSet(frames, labels, time_dim=0)).argmax(-1).tolist()
    rows[0]["fsdd_accuracy"], rows[0]["fsdd_f1"], *_ = score_predictions(labels, predicted, prepared.teacher.labels)
    scores_file = out_dir / SCORES_FILE
    scores = _read_scores(scores_file)
    manifest_hash = file_sha256(manifest)
    for row in rows[1:]:
        key = f"{file_sha256(Path(row['model_file']))}:{manifest_hash}:{SCORING}"
        if key not in scores:
            evaluation = evaluate_model_file(row["model_file"], manifest, "test", latency_samples=0, progress=False,
                                             cache_dir=cache_root(config.data) / "features")
            scores[key] = [evaluation.accuracy, evaluation.f1]
            write_json(scores_file, scores)
        row["fsdd_accuracy"], row["fsdd_f1"] = scores[key]
    for row in rows:
        row["fsdd_utterances"] = len(fsdd)
    return rows


def _read_scores(path: Path) -> dict[str, list[float]]:
    """The kept FSDD scores; a missing or damaged file (it is only a cache) is an empty one."""
    try:
        scores = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(scores, dict):
        return {}
    return {key: value for key, value in scores.items()
            if isinstance(value, list) and len(value) == 2 and all(isinstance(v, float) for v in value)}


def fsdd_markdown(rows: list[dict[str, Any]]) -> str:
    """The real-speech table: synthetic test accuracy beside FSDD accuracy and macro-F1, in percent."""
    count = rows[0].get("fsdd_utterances", 0) if rows else 0
    lines = [
        f"Real human speech: FSDD, {count} recordings of 6 speakers; every model trained on synthetic digits only",
        "",
        "| model | bits | synthetic test acc (%) | FSDD acc (%) | FSDD macro-F1 (%) |",
        "|---|---|---|---|---|",
    ]
    seeds = {row.get("seed") for row in rows[1:]}
    for row in rows:
        method = row["method"] + (f" (seed {row['seed']})" if len(seeds) > 1 and row.get("seed") is not None else "")
        lines.append(f"| {method} | {row['bits']} | {100 * row['accuracy']:.1f} | "
                     f"{100 * row['fsdd_accuracy']:.1f} | {100 * row['fsdd_f1']:.1f} |")
    return "\n".join(lines)
