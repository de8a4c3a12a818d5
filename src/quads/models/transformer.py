"""A Whisper-like transformer encoder, built in: the paper's student architecture at any width.

Same shape as Whisper's audio encoder: a conv stem (k3, then k3 stride 2: 50 frames per second), sinusoidal
positions, pre-LayerNorm blocks (self-attention + GELU MLP), a final LayerNorm. Differences: the positions are
computed for the input's real length (no 30 s padding, no 1500-frame limit), padded frames are masked out of
attention and zeroed before each convolution, and residual dropout is configurable.

Presets (parameters measured with `num_parameters()`, 80 mel bins, encoder only, no head):

| preset | d_model | layers | heads | ffn | parameters |
|---|---|---|---|---|---|
| transformer-250k | 64 | 4 | 4 | 256 | 227,584 |
| transformer-1m | 128 | 4 | 4 | 512 | 872,960 |
| transformer-3m | 256 | 4 | 4 | 1024 | 3,417,088 |
| whisper-tiny-like | 384 | 4 | 6 | 1536 | 7,632,384 |

`whisper-tiny-like` matches Whisper-tiny's encoder (7.63M without its 576K learned-but-sinusoidal position table).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quads.errors import ConfigError
from quads.models.encoder import Encoder, check_features, conv_output_mask, zero_padded_frames


@dataclass(frozen=True)
class TransformerConfig:
    """Every size of the built-in transformer comes from here."""

    n_mels: int = 80
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    ffn_dim: int = 512
    dropout: float = 0.1

    def __post_init__(self) -> None:
        for key in ("n_mels", "d_model", "n_layers", "n_heads", "ffn_dim"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"transformer encoder: {key} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"transformer encoder: d_model = {self.d_model} is not divisible by n_heads = {self.n_heads}"
            )
        if self.d_model % 2:
            raise ConfigError(f"transformer encoder: d_model = {self.d_model} must be even for sinusoidal positions")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"transformer encoder: dropout must lie in [0, 1), got {self.dropout}")


TRANSFORMER_PRESETS: dict[str, TransformerConfig] = {
    "transformer-250k": TransformerConfig(d_model=64, n_layers=4, n_heads=4, ffn_dim=256),
    "transformer-1m": TransformerConfig(d_model=128, n_layers=4, n_heads=4, ffn_dim=512),
    "transformer-3m": TransformerConfig(d_model=256, n_layers=4, n_heads=4, ffn_dim=1024),
    "whisper-tiny-like": TransformerConfig(d_model=384, n_layers=4, n_heads=6, ffn_dim=1536),
}


def sinusoidal_positions(length: int | Tensor, channels: int, device: torch.device | None = None) -> Tensor:
    """Whisper's fixed position table [length, channels]: sin then cos over geometric timescales up to 10,000."""
    half = channels // 2
    increment = math.log(10000.0) / max(half - 1, 1)
    inverse_timescales = torch.exp(-increment * torch.arange(half, device=device, dtype=torch.float32))
    scaled_time = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1) * inverse_timescales
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)


def attention_bias(key_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """[B, T] key mask -> additive [B, 1, 1, T] bias: 0 on real keys, the dtype's most negative value on padding
    (finite, so an utterance with no real frame gives uniform attention instead of NaN)."""
    bias = torch.zeros(key_mask.shape, dtype=dtype, device=key_mask.device)
    bias = bias.masked_fill(~key_mask, torch.finfo(dtype).min)
    return bias[:, None, None, :]


class MultiHeadSelfAttention(nn.Module):
    """Whisper's attention: the key projection has no bias; padded keys are masked out. No dropout on the attention
    weights (Whisper has none, and it would force PyTorch's slow unfused attention path when training on a CPU)."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model, bias=False)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        batch, frames, width = x.shape
        split = (batch, frames, self.n_heads, width // self.n_heads)
        q, k, v = (proj(x).view(split).transpose(1, 2) for proj in (self.query, self.key, self.value))
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.out(attended.transpose(1, 2).reshape(batch, frames, width))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm residual block: x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, d_model: int, n_heads: int, ffn_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(d_model)
        self.attention = MultiHeadSelfAttention(d_model, n_heads)
        self.mlp_norm = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        x = x + self.dropout(self.attention(self.attention_norm(x), bias))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


class ConvStem(nn.Module):
    """Whisper's two convolutions: k3 (n_mels -> d_model), then k3 stride 2, each followed by GELU; halves time."""

    def __init__(self, n_mels: int, d_model: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d_model, d_model, kernel_size=3, stride=2, padding=1)

    def forward(self, features: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """[B, n_mels, T], [B, T] -> [B, D, ceil(T / 2)], [B, ceil(T / 2)]."""
        x = F.gelu(self.conv1(zero_padded_frames(features, mask)))
        x = F.gelu(self.conv2(zero_padded_frames(x, mask)))
        return x, conv_output_mask(mask, kernel_size=3, stride=2, padding=1, output_frames=x.shape[-1])


class TransformerEncoder(Encoder):
    """The built-in Whisper-like student (or from-scratch teacher)."""

    def __init__(self, config: TransformerConfig | None = None) -> None:
        super().__init__()
        self.config = config or TransformerConfig()
        self.embed_dim = self.config.d_model
        self.n_mels = self.config.n_mels
        self.stem = ConvStem(self.config.n_mels, self.config.d_model)
        self.blocks = nn.ModuleList(
            TransformerBlock(self.config.d_model, self.config.n_heads, self.config.ffn_dim, self.config.dropout)
            for _ in range(self.config.n_layers)
        )
        self.final_norm = nn.LayerNorm(self.config.d_model)
        self.dropout = nn.Dropout(self.config.dropout)

    def forward(self, features: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        check_features(features, mask, self.n_mels, "transformer encoder")
        x, frame_mask = self.stem(features, mask)
        x = x.transpose(1, 2)
        x = self.dropout(x + sinusoidal_positions(x.shape[1], self.embed_dim, x.device).to(x.dtype))
        bias = attention_bias(frame_mask, x.dtype)
        for block in self.blocks:
            x = block(x, bias)
        return self.final_norm(x), frame_mask

    def config_dict(self) -> dict[str, Any]:
        return {"type": "transformer", **asdict(self.config)}
