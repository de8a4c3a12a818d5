"""The frozen teacher runs once per utterance: its frame embeddings are cached on disk, content-keyed.

The teacher's encoder is frozen, so its output for an utterance never changes. Running it every epoch (or in
every run of an ablation grid) would cost far more than training the student, so quads computes each
utterance's frame embeddings once and stores them beside the feature cache, keyed by (audio content,
teacher identity). A run then makes exactly one teacher pass per distinct utterance on a cold cache, and none
on a warm one; `TeacherCacheStats` reports both.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from quads.audio import load_audio
from quads.data import Utterance
from quads.features import FeatureCache

TEACHER_CACHE_FORMAT = 1


@dataclass
class TeacherCacheStats:
    utterances: int = 0
    hits: int = 0
    teacher_passes: int = 0  # utterances the teacher actually ran on

    @property
    def hit_rate(self) -> float:
        return self.hits / self.utterances if self.utterances else 0.0

    def __str__(self) -> str:
        return (f"teacher cache: {self.utterances} utterances, {self.hits} hits ({100 * self.hit_rate:.0f}%), "
                f"{self.teacher_passes} teacher passes")


def teacher_identity(teacher: object) -> str:
    """What makes two teachers' outputs the same: the teacher's own identity string (model files' hash)."""
    identity = getattr(teacher, "identity", None)
    if callable(identity):
        identity = identity()
    if not identity:
        raise TypeError(f"{type(teacher).__name__} must define `identity` to be cached")
    return str(identity)


class TeacherCache:
    """Per-utterance teacher frame embeddings [T', D], stored as [D, T'] float32 arrays in a FeatureCache."""

    def __init__(self, directory: str | Path):
        self.store = FeatureCache(Path(directory), dtype="float32")

    def key(self, path: Path, identity: str, pooled: bool = False) -> str:
        record = {"audio": self.store.content_hash(path), "teacher": identity, "format": TEACHER_CACHE_FORMAT,
                  "pooled": pooled}
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def teacher_frame_embeddings(
    utterances: Sequence[Utterance],
    teacher,
    cache: TeacherCache | None,
    *,
    batch_size: int = 32,
    progress: bool = True,
    stats: TeacherCacheStats | None = None,
    pooled: bool = False,
    keep_entries: bool = True,
) -> list[Tensor]:
    """Frame embeddings [T', D] for each utterance, from the cache or from one teacher pass each.

    `pooled=True` keeps only the mean over frames ([1, D]): all a linear or MLP head uses, and 100-1000x less
    to store for a large teacher on a large corpus (Whisper-large on FSC: ~20 MB instead of ~17 GB).
    `keep_entries=False` reads entries already cached but writes no new ones: for a caller that keeps the outputs
    itself (the sharded example store), so a large teacher's frames are not on disk twice.
    """
    stats = stats if stats is not None else TeacherCacheStats()
    identity = teacher_identity(teacher)
    results: list[Tensor | None] = [None] * len(utterances)
    keys: list[str] = [""] * len(utterances)
    pending: list[int] = []
    for index, utterance in enumerate(utterances):
        stats.utterances += 1
        if cache is not None:
            keys[index] = cache.key(utterance.path, identity, pooled)
            stored = cache.store.get(keys[index], teacher.embed_dim)
            if stored is not None:
                results[index] = torch.from_numpy(np.ascontiguousarray(stored.T))
                stats.hits += 1
                continue
        pending.append(index)
    bar = tqdm(total=len(pending), desc="teacher", unit="utt", delay=1.0, disable=not progress or not pending,
               leave=False)
    for start in range(0, len(pending), batch_size):
        chunk = pending[start : start + batch_size]
        waveforms = [load_audio(utterances[index].path) for index in chunk]
        embeddings = teacher.frame_embeddings(waveforms)
        stats.teacher_passes += len(chunk)
        for index, frames in zip(chunk, embeddings, strict=True):
            frames = torch.as_tensor(frames, dtype=torch.float32)
            if pooled:
                frames = frames.mean(0, keepdim=True)
            if cache is not None and keep_entries:
                cache.store.put(keys[index], frames.T.numpy())
            results[index] = frames
        bar.update(len(chunk))
    bar.close()
    return results  # type: ignore[return-value]
