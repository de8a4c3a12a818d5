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
from quads.cache_dir import cache_root
from quads.config import DataConfig
from quads.data import Corpus, LabelMap, load_slurp
from quads.data.detect import detect_corpus
from quads.errors import DataError
from quads.features import FeatureCache, compute_features
from quads.training.batches import ExampleSet
from quads.training.shards import ShardedExamples, open_or_build
from quads.training.teacher_cache import TeacherCache, TeacherCacheStats, teacher_frame_embeddings, teacher_identity

logger = logging.getLogger(__name__)

# v6: 48 wordings per intent (v3: 24), none a held-out one wrapped in "please"; v7: + 6 speakers of a neural voice;
# v8: train speakers say each intent 4 times (valid and test: v7's clips, byte for byte)
DEFAULT_CORPUS_NAME = "commands-v8"
BUILTIN_TRAIN_UTTERANCES_PER_INTENT = 4


def default_corpus_dir(data: DataConfig | None = None) -> Path:
    return cache_root(data) / "corpora" / DEFAULT_CORPUS_NAME


def ensure_default_corpus(data: DataConfig | None = None, *, progress: bool = True) -> Path:
    """The built-in synthetic command corpus, synthesised on first use (resumes if a previous try was cut)."""
    directory = default_corpus_dir(data)
    if not (directory / "data" / "test_data.csv").exists():
        from quads.synth import synthesize_corpus

        logger.info("synthesising the built-in command corpus into %s", directory)
        synthesize_corpus(directory, seed=0, train_utterances_per_intent=BUILTIN_TRAIN_UTTERANCES_PER_INTENT,
                          progress=progress)
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


def store_directory(data: DataConfig, kind: str, keys: list[str], labels: list[int]) -> Path:
    """Where the example store of one split lives: named by its items' cache keys and labels, in order."""
    digest = hashlib.sha256()
    for key, label in zip(keys, labels, strict=True):
        digest.update(f"{key}\t{label}\n".encode())
    return cache_root(data) / "stores" / f"{kind}-{digest.hexdigest()[:20]}"


def student_examples(corpus: Corpus, frontend: FrontEndConfig, data: DataConfig, *, progress: bool = True,
                     splits: tuple[str, ...] = ("train", "valid", "test")) -> dict[str, ShardedExamples]:
    """Log-mel features [n_mels, T] for each split, in shards on disk read per batch (written once, from the
    per-utterance feature cache)."""
    cache = FeatureCache(cache_root(data) / "features")
    sets = {}
    for split in splits:
        utterances = corpus.splits[split]
        labels = encode_labels(corpus, split, corpus.label_map)
        keys = [cache.key(utterance.path, frontend) for utterance in utterances]

        def source(positions, utterances=utterances):
            return compute_features([utterances[i] for i in positions], frontend, cache, progress=progress)

        sets[split] = open_or_build(store_directory(data, "features", keys, labels), len(utterances), source,
                                    labels, [u.utt_id for u in utterances], time_dim=1, dtype=cache.dtype.name)
    logger.info("student features: %s", cache)
    return sets


@dataclass
class TeacherFrames:
    sets: dict[str, ExampleSet | ShardedExamples]
    stats: TeacherCacheStats = field(default_factory=TeacherCacheStats)


def teacher_examples(corpus: Corpus, teacher, data: DataConfig, *, pooled: bool = False, progress: bool = True,
                     splits: tuple[str, ...] = ("train", "valid", "test")) -> TeacherFrames:
    """The frozen teacher's frame embeddings [T', D] for each split, one teacher pass per uncached utterance,
    in shards on disk read per batch (new outputs go only there, not also into the per-utterance cache: a
    Whisper-large teacher's frames are the largest thing quads writes). `pooled=True` keeps only their mean
    ([1, D] per utterance), enough for a linear or MLP teacher head."""
    cache = TeacherCache(cache_root(data) / "teacher")
    identity = teacher_identity(teacher)
    stats = TeacherCacheStats()
    sets = {}
    for split in splits:
        utterances = corpus.splits[split]
        labels = encode_labels(corpus, split, corpus.label_map)
        keys = [cache.key(utterance.path, identity, pooled) for utterance in utterances]
        directory = store_directory(data, "teacher", keys, labels)
        finished = (directory / "index.json").exists()
        before = (stats.utterances, stats.hits, stats.teacher_passes)

        def source(positions, utterances=utterances):
            return teacher_frame_embeddings([utterances[i] for i in positions], teacher, cache, progress=progress,
                                            stats=stats, pooled=pooled, keep_entries=False)

        sets[split] = open_or_build(directory, len(utterances), source, labels, [u.utt_id for u in utterances],
                                    time_dim=0)
        if finished:  # a finished store counts as cache hits, less any shard the teacher had to recompute
            stats.utterances = before[0] + len(utterances)
            stats.hits = before[1] + len(utterances) - (stats.teacher_passes - before[2])
    return TeacherFrames(sets, stats)


def write_json(path: Path, payload: dict) -> None:
    from quads.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")
