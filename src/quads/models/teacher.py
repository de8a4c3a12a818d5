"""Frozen teachers behind one protocol, so training code can cache any teacher's frame embeddings the same way.

A teacher is a frozen encoder plus a trainable `TeacherHead` (quads.models.head). The encoder part is a
`FrozenTeacher`: waveforms in, one [T', D] frame-embedding tensor per utterance out. `input_kind` says what the
encoder itself consumes ("waveform" for speech_embedding, "logmel" for Whisper, which owns its log-mel front-end
with the right number of mel bins).

`build_teacher(spec)` reads a one-string spec, as used in configs and on the command line:
  speech_embedding                      Google's speech_embedding (openwakeword 0.5.1 ONNX files)
  whisper:openai/whisper-large-v3       a Whisper checkpoint from the local Hugging Face cache
  whisper:/path/to/dir                  a Whisper checkpoint directory (save_pretrained layout)
  whisper-random:tiny                   a Whisper size with random weights (tests, smoke runs)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import torch

from quads.errors import ConfigError

if TYPE_CHECKING:  # Whisper needs transformers (seconds to import); the default teacher does not
    from quads.models.whisper import WhisperTeacherEncoder

PIPELINE_VERSION = 1  # bump when the Whisper teacher's pre- or post-processing changes


@runtime_checkable
class FrozenTeacher(Protocol):
    input_kind: str  # "waveform" | "logmel": what the encoder consumes
    embed_dim: int

    def frame_embeddings(self, waveforms: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """16 kHz float waveforms -> one [T'_i, embed_dim] float32 CPU tensor per utterance."""
        ...

    def num_parameters(self) -> int: ...

    def identity(self) -> str:
        """A string that changes whenever the frame embeddings would (weights, front-end, pipeline); the cache key."""
        ...

    def description(self) -> str: ...


class WhisperFrozenTeacher:
    """A frozen Whisper encoder with its own log-mel front-end (80 or 128 bins, as the checkpoint expects)."""

    input_kind = "logmel"

    def __init__(self, encoder: WhisperTeacherEncoder, batch_size: int = 8, device: str | torch.device = "cpu") -> None:
        from quads.audio import FrontEndConfig, LogMelSpectrogram

        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"whisper teacher: batch_size must be a positive integer, got {batch_size!r}")
        self.device = torch.device(device)
        self.encoder = encoder.freeze().to(self.device)
        self.front_end = LogMelSpectrogram(FrontEndConfig(n_mels=encoder.n_mels)).to(self.device)
        self.embed_dim = encoder.embed_dim
        self.n_mels = encoder.n_mels
        self.batch_size = batch_size
        self._identity: str | None = None

    @torch.no_grad()
    def frame_embeddings(self, waveforms: Sequence[np.ndarray]) -> list[torch.Tensor]:
        from quads.audio import pad_batch

        # Sort by length so each batch pads little; restore the caller's order at the end.
        order = sorted(range(len(waveforms)), key=lambda index: len(waveforms[index]))
        by_index: dict[int, torch.Tensor] = {}
        for start in range(0, len(order), self.batch_size):
            chosen = order[start : start + self.batch_size]
            batch, lengths = pad_batch([waveforms[index] for index in chosen])
            features, mask = self.front_end(batch.to(self.device), lengths.to(self.device))
            frames, frame_mask = self.encoder(features, mask)
            for row, index in enumerate(chosen):
                by_index[index] = frames[row, frame_mask[row]].float().cpu()
        return [by_index[index] for index in range(len(waveforms))]

    def num_parameters(self) -> int:
        return self.encoder.num_parameters()

    def identity(self) -> str:
        """Hash of the encoder's weights and the front-end settings (weights, not names: a re-saved or
        fine-tuned checkpoint under the same name must not reuse stale cached embeddings)."""
        if self._identity is None:
            digest = hashlib.sha256(self.front_end.config.to_json().encode())
            for name, tensor in sorted(self.encoder.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
            self._identity = f"whisper:v{PIPELINE_VERSION}:{digest.hexdigest()[:16]}"
        return self._identity

    def description(self) -> str:
        return self.encoder.description() + ", frozen"


def build_teacher(spec: str, threads: int = 1) -> FrozenTeacher:
    """A frozen teacher from its spec string (see the module docstring); `threads` is for onnxruntime teachers."""
    spec = spec.strip()
    kind, _, argument = spec.partition(":")
    if kind == "speech_embedding" and not argument:
        from quads.models.speech_embedding import SpeechEmbeddingTeacher

        return SpeechEmbeddingTeacher(threads=threads)
    from quads.models.whisper import WHISPER_SIZES, WhisperTeacherEncoder

    if kind == "whisper" and argument:
        return WhisperFrozenTeacher(WhisperTeacherEncoder.from_pretrained(argument))
    if kind == "whisper-random" and argument:
        if argument not in WHISPER_SIZES:
            raise ConfigError(
                f"teacher {spec!r}: unknown Whisper size {argument!r}; expected one of {', '.join(WHISPER_SIZES)}"
            )
        with torch.random.fork_rng():  # a "random" teacher is the same teacher on every run
            torch.manual_seed(0)
            return WhisperFrozenTeacher(WhisperTeacherEncoder.from_size(argument))
    raise ConfigError(
        f"unknown teacher {spec!r}; expected 'speech_embedding', 'whisper:<hub id or directory>' "
        "or 'whisper-random:<size>' (sizes: " + ", ".join(WHISPER_SIZES) + ")"
    )
