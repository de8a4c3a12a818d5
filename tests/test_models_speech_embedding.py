"""The speech_embedding teacher: found without importing openwakeword, openwakeword's windowing (2 s -> 16
embeddings of 96), padding of short clips, batching that changes nothing, and clear errors."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from quads.errors import AudioError, ConfigError
from quads.models import speech_embedding
from quads.models.speech_embedding import SpeechEmbeddingTeacher, find_model_files

try:
    find_model_files()
    HAVE_MODEL_FILES = True
except ConfigError:
    HAVE_MODEL_FILES = False
needs_model_files = pytest.mark.skipif(not HAVE_MODEL_FILES, reason="openwakeword 0.5.1 model files not installed")


@pytest.fixture(scope="module")
def teacher() -> SpeechEmbeddingTeacher:
    return SpeechEmbeddingTeacher(threads=1)


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise bursts in silence: enough structure for embeddings to differ between clips."""
    rng = np.random.default_rng(seed)
    samples = int(seconds * 16000)
    envelope = (np.sin(np.linspace(0, 12 * np.pi, samples)) > 0.3).astype(np.float32)
    return (rng.standard_normal(samples).astype(np.float32) * 0.2 * envelope).clip(-1, 1)


@needs_model_files
def test_two_second_clip_gives_197_mel_frames_and_16_embeddings_of_96(teacher: SpeechEmbeddingTeacher) -> None:
    clip = speech_like(2.0)
    assert teacher.mel_frames(clip).shape == (197, 32)
    embeddings = teacher.embed(clip)
    assert embeddings.shape == (16, 96) and embeddings.dtype == np.float32
    assert np.isfinite(embeddings).all()


@needs_model_files
def test_clip_shorter_than_one_window_is_padded_to_exactly_one_embedding(teacher: SpeechEmbeddingTeacher) -> None:
    for samples in (1, 4800, 12511, 12512, 13791):  # one window = 76 mel frames = 512 + 75 * 160 samples
        assert teacher.embed(speech_like(samples / 16000)).shape == (1, 96)
    assert teacher.embed(speech_like(13792 / 16000)).shape == (2, 96)  # 8 more hops of 160 samples


@needs_model_files
def test_batched_embeddings_equal_one_at_a_time_whatever_the_batch_mates(teacher: SpeechEmbeddingTeacher) -> None:
    quiet_with_silence = np.concatenate([np.zeros(8000, np.float32), speech_like(1.2, seed=3) * 0.01])
    clips = [speech_like(2.0, seed=1), quiet_with_silence, speech_like(0.4, seed=2), speech_like(3.1, seed=4)]
    small_groups = SpeechEmbeddingTeacher(threads=1, windows_per_call=5, utterances_per_group=3)
    batched = small_groups.embed_batch(clips)
    for clip, embeddings in zip(clips, batched, strict=True):
        np.testing.assert_allclose(embeddings, teacher.embed(clip), atol=1e-5, rtol=0)
    assert not np.allclose(batched[0][:1], batched[3][:1])


@needs_model_files
def test_frozen_teacher_protocol(teacher: SpeechEmbeddingTeacher) -> None:
    from quads.models.teacher import FrozenTeacher, build_teacher

    assert isinstance(teacher, FrozenTeacher)
    assert teacher.input_kind == "waveform" and teacher.embed_dim == 96
    frames = teacher.frame_embeddings([speech_like(2.0), speech_like(1.0)])
    assert [tuple(f.shape) for f in frames] == [(16, 96), (3, 96)] and frames[0].dtype == torch.float32
    assert teacher.num_parameters() == 599_532  # mel filterbank and embedding network initializers
    assert teacher.identity() == build_teacher("speech_embedding").identity()
    assert teacher.identity().startswith("speech_embedding:")
    assert "96-d" in teacher.description()


def test_finding_the_model_files_does_not_import_openwakeword() -> None:
    if importlib.util.find_spec("openwakeword") is None:
        pytest.skip("openwakeword not installed")
    sys.modules.pop("openwakeword", None)
    with contextlib.suppress(ConfigError):  # absent files are fine here: only the import is tested
        find_model_files()
    assert "openwakeword" not in sys.modules


def test_missing_openwakeword_is_a_config_error_with_the_install_command(monkeypatch) -> None:
    monkeypatch.setattr(speech_embedding.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install --no-deps openwakeword==0\.5\.1"):
        SpeechEmbeddingTeacher()


@needs_model_files
def test_waveforms_that_are_not_mono_samples_are_audio_errors(teacher: SpeechEmbeddingTeacher) -> None:
    with pytest.raises(AudioError, match="waveform 1 must be 1-D"):
        teacher.embed_batch([speech_like(1.0), np.zeros((2, 16000), np.float32)])
    with pytest.raises(AudioError, match="NaN"):
        teacher.embed(np.full(16000, np.nan, np.float32))
    with pytest.raises(ConfigError, match="threads"):
        SpeechEmbeddingTeacher(threads=0)


def test_the_default_teacher_does_not_import_transformers() -> None:
    """Whisper (and its seconds-long transformers import) loads only for a whisper teacher spec."""
    code = ("import sys\n"
            "from quads.models.teacher import build_teacher\n"
            f"if {HAVE_MODEL_FILES}:\n"
            "    build_teacher('speech_embedding')\n"
            "assert 'transformers' not in sys.modules, 'transformers was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 0, result.stderr
