import numpy as np
import soundfile
import torch

from quads.data import Utterance
from quads.training.teacher_cache import TeacherCache, TeacherCacheStats, teacher_frame_embeddings


class CountingTeacher:
    """A stand-in frozen teacher: frame t of an utterance is [mean of its samples, t, ...]; counts its passes."""

    embed_dim = 4
    identity = "counting-teacher-v1"

    def __init__(self):
        self.passes = 0

    def frame_embeddings(self, waveforms):
        self.passes += len(waveforms)
        return [torch.tensor([[float(w.mean()), t, 0.0, 1.0] for t in range(1 + len(w) // 4000)]) for w in waveforms]


def _utterances(tmp_path, count):
    rng = np.random.default_rng(0)
    utterances = []
    for i in range(count):
        path = tmp_path / f"u{i}.wav"
        soundfile.write(path, rng.standard_normal(8000 + 1000 * i).astype(np.float32) * 0.1, 16000)
        utterances.append(Utterance(f"u{i}", path, "x", "s"))
    return utterances


def test_the_teacher_runs_once_per_utterance_and_the_cache_serves_the_rest(tmp_path):
    utterances = _utterances(tmp_path, 5)
    teacher, cache = CountingTeacher(), TeacherCache(tmp_path / "cache")
    cold_stats, warm_stats = TeacherCacheStats(), TeacherCacheStats()
    cold = teacher_frame_embeddings(utterances, teacher, cache, stats=cold_stats, progress=False)
    warm = teacher_frame_embeddings(utterances, teacher, cache, stats=warm_stats, progress=False)
    assert teacher.passes == 5
    assert (cold_stats.teacher_passes, warm_stats.teacher_passes, warm_stats.hit_rate) == (5, 0, 1.0)
    for a, b in zip(cold, warm, strict=True):
        assert torch.equal(a, b)


def test_pooled_entries_are_the_frame_mean_and_kept_apart_from_frame_entries(tmp_path):
    utterances = _utterances(tmp_path, 2)
    teacher, cache = CountingTeacher(), TeacherCache(tmp_path / "cache")
    frames = teacher_frame_embeddings(utterances, teacher, cache, progress=False)
    pooled = teacher_frame_embeddings(utterances, teacher, cache, pooled=True, progress=False)
    assert teacher.passes == 4  # a pooled entry is a different entry
    for f, p in zip(frames, pooled, strict=True):
        assert p.shape == (1, 4)
        torch.testing.assert_close(p[0], f.mean(0))


def test_another_teacher_does_not_read_this_teachers_entries(tmp_path):
    utterances = _utterances(tmp_path, 2)
    cache = TeacherCache(tmp_path / "cache")
    teacher_frame_embeddings(utterances, CountingTeacher(), cache, progress=False)
    other = CountingTeacher()
    other.identity = "counting-teacher-v2"
    teacher_frame_embeddings(utterances, other, cache, progress=False)
    assert other.passes == 2


def test_a_resynthesised_corpus_with_the_same_ids_is_a_different_corpus(tmp_path):
    import os

    from quads.data import Corpus, LabelMap
    from quads.training.experiment import corpus_fingerprint

    utterances = _utterances(tmp_path, 3)
    corpus = Corpus("fsc", tmp_path, {"train": utterances}, LabelMap(["x"]))
    before = corpus_fingerprint(corpus)
    assert corpus_fingerprint(corpus) == before
    soundfile.write(utterances[0].path, np.zeros(8000, dtype=np.float32), 16000)
    os.utime(utterances[0].path, ns=(1, 1))
    assert corpus_fingerprint(corpus) != before
