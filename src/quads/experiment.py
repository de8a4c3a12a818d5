"""From a config to tensors: the corpus, the student's log-mel examples and the teacher's frame embeddings.

Everything that does not change between runs is cached (features, teacher outputs, the synthetic corpus), so
the expensive parts of an experiment happen once per machine, not once per run or per epoch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from quads.audio import FrontEndConfig
from quads.batches import ExampleSet
from quads.cache_dir import cache_root
from quads.config import DataConfig
from quads.data import Corpus, LabelMap, load_slurp
from quads.data.detect import detect_corpus
from quads.errors import DataError
from quads.features import FeatureCache, compute_features
from quads.teacher_cache import TeacherCache, TeacherCacheStats, teacher_frame_embeddings

logger = logging.getLogger(__name__)

DEFAULT_CORPUS_NAME = "commands-v2"


def default_corpus_dir(data: DataConfig | None = None) -> Path:
    return cache_root(data) / "corpora" / DEFAULT_CORPUS_NAME


def ensure_default_corpus(data: DataConfig | None = None, *, progress: bool = True) -> Path:
    """The built-in synthetic command corpus, synthesised on first use (resumes if a previous try was cut)."""
    directory = default_corpus_dir(data)
    if not (directory / "data" / "test_data.csv").exists():
        from quads.synth import synthesize_corpus

        logger.info("synthesising the built-in command corpus into %s", directory)
        synthesize_corpus(directory, seed=0, progress=progress)
    return directory


def load_training_corpus(data: DataConfig, *, progress: bool = True) -> Corpus:
    """The configured corpus (FSC / SLURP layout or manifest), or the built-in synthetic one."""
    path = Path(data.path).expanduser() if data.path else ensure_default_corpus(data, progress=progress)
    loader, root = detect_corpus(path)  # once: the loader that recognised the layout gets only its own options
    options: dict = {"skip_missing": data.skip_missing_audio}
    if loader is load_slurp:
        options["recordings"] = data.slurp_recordings
    corpus = loader(root, **options)
    for split in ("train", "valid", "test"):
        if not corpus.splits.get(split):
            raise DataError(f"{path}: the corpus has no '{split}' utterances; training needs train, valid and test")
    return corpus


def corpus_fingerprint(corpus: Corpus) -> str:
    """Identity of a corpus for reuse and checkpoint checks: its utterances, labels and audio files.

    The files enter by path, size and modification time, so a corpus re-synthesised with other settings (same
    ids and labels, other audio) is a different corpus and a pre-tuned teacher or checkpoint is not reused.
    """
    digest = hashlib.sha256()
    for split in sorted(corpus.splits):
        for utterance in corpus.splits[split]:
            try:
                stat = os.stat(utterance.path)
                audio = f"{stat.st_size}:{stat.st_mtime_ns}"
            except OSError:
                audio = "missing"
            digest.update(f"{split}\t{utterance.utt_id}\t{utterance.label}\t{utterance.path}\t{audio}\n".encode())
    return digest.hexdigest()[:16]


def encode_labels(corpus: Corpus, split: str, label_map: LabelMap) -> list[int]:
    return [label_map.encode(utterance.label) for utterance in corpus.splits[split]]


def student_examples(corpus: Corpus, frontend: FrontEndConfig, data: DataConfig, *, progress: bool = True,
                     splits: tuple[str, ...] = ("train", "valid", "test")) -> dict[str, ExampleSet]:
    """Log-mel features [n_mels, T] for each split (from the feature cache when possible)."""
    cache = FeatureCache(cache_root(data) / "features")
    sets = {}
    for split in splits:
        utterances = corpus.splits[split]
        features = compute_features(utterances, frontend, cache, progress=progress)
        sets[split] = ExampleSet(features, encode_labels(corpus, split, corpus.label_map), time_dim=1,
                                 ids=[u.utt_id for u in utterances])
    logger.info("student features: %s", cache)
    return sets


@dataclass
class TeacherFrames:
    sets: dict[str, ExampleSet]
    stats: TeacherCacheStats = field(default_factory=TeacherCacheStats)


def teacher_examples(corpus: Corpus, teacher, data: DataConfig, *, pooled: bool = False, progress: bool = True,
                     splits: tuple[str, ...] = ("train", "valid", "test")) -> TeacherFrames:
    """The frozen teacher's frame embeddings [T', D] for each split, one teacher pass per uncached utterance.

    `pooled=True` keeps only their mean ([1, D] per utterance), enough for a linear or MLP teacher head."""
    cache = TeacherCache(cache_root(data) / "teacher")
    stats = TeacherCacheStats()
    sets = {}
    for split in splits:
        utterances = corpus.splits[split]
        frames = teacher_frame_embeddings(utterances, teacher, cache, progress=progress, stats=stats, pooled=pooled)
        sets[split] = ExampleSet(frames, encode_labels(corpus, split, corpus.label_map), time_dim=0,
                                 ids=[u.utt_id for u in utterances])
    return TeacherFrames(sets, stats)


def write_json(path: Path, payload: dict) -> None:
    from quads.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")
