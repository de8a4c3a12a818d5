"""The one interface every torch speech encoder in quads implements, and the pooling that turns frames into z.

An encoder hears log-mel features [B, n_mels, T] with a padding mask [B, T] (True = real frame) and returns
frame embeddings [B, T', D] with their own mask [B, T']. Padding must never change a real output: every layer
that mixes time zeroes padded frames first (as the zero padding of a convolution on the clip alone would) and
attention ignores padded keys, so an utterance gives the same embedding alone or inside a padded batch.

`config_dict()` is the contract with the packed model file: a JSON-able dict from which
`quads.models.registry.build_encoder` rebuilds the same architecture without executing any stored code.
"""

from __future__ import annotations

import abc
from typing import Any

import torch
from torch import Tensor, nn

from quads.errors import ConfigError


class Encoder(nn.Module, abc.ABC):
    """Log-mel features in, frame embeddings out; `embed_dim` is D, `n_mels` the feature bins it expects."""

    embed_dim: int
    n_mels: int
    max_input_frames: int | None = None  # the longest input in log-mel frames (None: any length)

    @abc.abstractmethod
    def forward(self, features: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """features [B, n_mels, T], mask [B, T] -> frames [B, T', D], frame_mask [B, T']."""

    @abc.abstractmethod
    def config_dict(self) -> dict[str, Any]:
        """JSON-able architecture description (with a "type" key) that `build_encoder` turns back into a model."""

    def num_parameters(self) -> int:
        """All parameters, trainable or frozen (non-learned buffers such as sinusoidal positions do not count)."""
        return sum(parameter.numel() for parameter in self.parameters())


def masked_mean_pool(frames: Tensor, frame_mask: Tensor) -> Tensor:
    """Average the real frames of each utterance: [B, T, D] and [B, T] -> [B, D].

    An utterance without any real frame pools to zeros rather than NaN.
    """
    weights = frame_mask.to(frames.dtype).unsqueeze(-1)
    total = (frames * weights).sum(dim=1)
    count = weights.sum(dim=1).clamp(min=1.0)
    return total / count


def zero_padded_frames(x: Tensor, mask: Tensor) -> Tensor:
    """Zero the padded frames of a channels-first [B, C, T] tensor so a convolution sees what it would see on
    the utterance alone (its own zero padding)."""
    return x * mask.unsqueeze(1).to(x.dtype)


def conv_output_mask(mask: Tensor, kernel_size: int, stride: int, padding: int, output_frames: int) -> Tensor:
    """The frame mask after a Conv1d: an output frame is real when it is one of the frames the convolution would
    produce on the utterance alone, i.e. index < floor((length + 2 * padding - kernel_size) / stride) + 1.

    Assumes each mask is a prefix of True (real frames first), which is what padded batches look like.
    """
    lengths = mask.sum(dim=-1)
    out_lengths = torch.div(lengths + 2 * padding - kernel_size, stride, rounding_mode="floor") + 1
    out_lengths = out_lengths.clamp(min=0) * (lengths > 0)
    positions = torch.arange(output_frames, device=mask.device)
    return positions.unsqueeze(0) < out_lengths.unsqueeze(1)


def check_features(features: Tensor, mask: Tensor, n_mels: int, encoder_name: str) -> None:
    """Raise a ConfigError naming the mismatch when features do not fit the encoder (e.g. 80 vs 128 mel bins)."""
    if features.ndim != 3:
        raise ConfigError(f"{encoder_name} expects features [batch, n_mels, frames], got shape {tuple(features.shape)}")
    if features.shape[1] != n_mels:
        raise ConfigError(
            f"{encoder_name} expects {n_mels} mel bins but the features have {features.shape[1]}; "
            f"set the front-end's n_mels to {n_mels}"
        )
    if mask.shape != (features.shape[0], features.shape[2]):
        raise ConfigError(
            f"{encoder_name}: mask shape {tuple(mask.shape)} does not match features "
            f"[batch={features.shape[0]}, frames={features.shape[2]}]"
        )
