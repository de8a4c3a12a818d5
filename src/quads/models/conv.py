"""A compact 1-D convolutional encoder: the smallest, fastest students (about 50K to 1M parameters).

A strided k3 stem, then stages of depthwise-separable blocks (depthwise conv over time, pointwise linear map over
channels, residual). Time is downsampled early (total stride 8 in the presets: 12.5 frames per second), which
is what lets these students train in minutes on two CPU cores.

Normalisation is LayerNorm over the channels of each frame. Unlike BatchNorm it uses no batch statistics, so it
behaves identically in training and evaluation, on one utterance or in a padded batch, and padded frames cannot
leak into the statistics; it also exports to ONNX as a single LayerNormalization node.

Presets (parameters measured with `num_parameters()`, 80 mel bins, encoder only, no head):

| preset | stem | stage channels | stage strides | blocks per stage | kernel | total stride | parameters |
|---|---|---|---|---|---|---|---|
| conv-50k | 48 | 64, 96 | 2, 2 | 1, 3 | 5 | 8 | 52,176 |
| conv-200k | 96 | 128, 192 | 2, 2 | 2, 3 | 5 | 8 | 195,872 |
| conv-1m | 192 | 256, 384 | 2, 2 | 2, 5 | 7 | 8 | 1,027,264 |
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from quads.errors import ConfigError
from quads.models.encoder import Encoder, check_features, conv_output_mask, zero_padded_frames


@dataclass(frozen=True)
class ConvConfig:
    """Every size of the conv encoder comes from here; stage lists have one entry per stage."""

    n_mels: int = 80
    stem_channels: int = 64
    stem_stride: int = 2
    stage_channels: tuple[int, ...] = (96, 128)
    stage_strides: tuple[int, ...] = (2, 2)
    stage_blocks: tuple[int, ...] = (1, 2)
    kernel_size: int = 5
    dropout: float = 0.1

    def __post_init__(self) -> None:
        for key in ("stage_channels", "stage_strides", "stage_blocks"):  # JSON gives lists; keep the config hashable
            object.__setattr__(self, key, tuple(getattr(self, key)))
        for key in ("n_mels", "stem_channels", "stem_stride", "kernel_size"):
            _check_positive_int(key, getattr(self, key))
        for key in ("stage_channels", "stage_strides", "stage_blocks"):
            for value in getattr(self, key):
                _check_positive_int(key, value)
        lengths = {len(self.stage_channels), len(self.stage_strides), len(self.stage_blocks)}
        if len(lengths) != 1:
            raise ConfigError(
                "conv encoder: stage_channels, stage_strides and stage_blocks need one entry per stage, got "
                f"{len(self.stage_channels)}, {len(self.stage_strides)} and {len(self.stage_blocks)}"
            )
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"conv encoder: kernel_size must be odd (centred windows), got {self.kernel_size}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"conv encoder: dropout must lie in [0, 1), got {self.dropout}")

    @property
    def total_stride(self) -> int:
        stride = self.stem_stride
        for value in self.stage_strides:
            stride *= value
        return stride


def _check_positive_int(key: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"conv encoder: {key} must hold positive integers, got {value!r}")


CONV_PRESETS: dict[str, ConvConfig] = {
    "conv-50k": ConvConfig(
        stem_channels=48, stage_channels=(64, 96), stage_strides=(2, 2), stage_blocks=(1, 3), kernel_size=5
    ),
    "conv-200k": ConvConfig(
        stem_channels=96, stage_channels=(128, 192), stage_strides=(2, 2), stage_blocks=(2, 3), kernel_size=5
    ),
    "conv-1m": ConvConfig(
        stem_channels=192, stage_channels=(256, 384), stage_strides=(2, 2), stage_blocks=(2, 5), kernel_size=7
    ),
}


def depthwise_conv(conv: nn.Conv1d, x: Tensor, mask: Tensor) -> Tensor:
    """A depthwise Conv1d on a channels-last [B, T, C] tensor, padded frames zeroed first."""
    return conv((x * mask.unsqueeze(-1).to(x.dtype)).transpose(1, 2)).transpose(1, 2)


class DepthwiseSeparableBlock(nn.Module):
    """depthwise conv (time, optional stride) -> LayerNorm -> GELU -> pointwise linear (channels) -> LayerNorm, plus
    a residual (identity, or a linear map of every stride-th frame when the shape changes), then GELU.

    Works channels-last ([B, T, C]) so LayerNorm and the pointwise layer need no transposes: 1.4x faster to train
    on a CPU than the channels-first equivalent (measured on conv-200k, batch 32 x 2.5 s).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        self.depthwise = nn.Conv1d(
            in_channels, in_channels, kernel_size, stride=stride, padding=kernel_size // 2, groups=in_channels
        )
        self.depthwise_norm = nn.LayerNorm(in_channels)
        self.pointwise = nn.Linear(in_channels, out_channels)
        self.pointwise_norm = nn.LayerNorm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.shortcut: nn.Module | None = (
            None if in_channels == out_channels and stride == 1 else nn.Linear(in_channels, out_channels)
        )

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, T, C_in], mask [B, T] -> [B, ceil(T / stride), C_out] and its mask."""
        y = F.gelu(self.depthwise_norm(depthwise_conv(self.depthwise, x, mask)))
        y = self.dropout(self.pointwise_norm(self.pointwise(y)))
        shortcut = x if self.shortcut is None else self.shortcut(x[:, :: self.stride])
        out = F.gelu(y + shortcut)
        pad = self.kernel_size // 2
        return out, conv_output_mask(mask, self.kernel_size, self.stride, pad, output_frames=out.shape[1])


class ConvEncoder(Encoder):
    """The built-in compact conv student."""

    def __init__(self, config: ConvConfig | None = None) -> None:
        super().__init__()
        self.config = config or ConvConfig()
        self.n_mels = self.config.n_mels
        self.embed_dim = self.config.stage_channels[-1]
        self.stem = nn.Conv1d(self.n_mels, self.config.stem_channels, 3, stride=self.config.stem_stride, padding=1)
        self.stem_norm = nn.LayerNorm(self.config.stem_channels)
        blocks = []
        channels = self.config.stem_channels
        for out_channels, stride, count in zip(
            self.config.stage_channels, self.config.stage_strides, self.config.stage_blocks, strict=True
        ):
            for index in range(count):
                blocks.append(
                    DepthwiseSeparableBlock(
                        channels,
                        out_channels,
                        self.config.kernel_size,
                        stride if index == 0 else 1,
                        self.config.dropout,
                    )
                )
                channels = out_channels
        self.blocks = nn.ModuleList(blocks)

    def forward(self, features: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        check_features(features, mask, self.n_mels, "conv encoder")
        x = self.stem(zero_padded_frames(features, mask)).transpose(1, 2)  # channels-last from here on
        x = F.gelu(self.stem_norm(x))
        mask = conv_output_mask(mask, 3, self.config.stem_stride, 1, output_frames=x.shape[1])
        for block in self.blocks:
            x, mask = block(x, mask)
        return x, mask

    def config_dict(self) -> dict[str, Any]:
        config = asdict(self.config)
        for key in ("stage_channels", "stage_strides", "stage_blocks"):
            config[key] = list(config[key])
        return {"type": "conv", **config}
