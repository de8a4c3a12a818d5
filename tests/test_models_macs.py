"""MAC counting: Whisper-tiny on 30 s is the paper's ~18.5 GMACs, and attention matmuls are counted."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from quads.models import TransformerConfig, TransformerEncoder, build_encoder, count_macs, gmacs_at_length


def test_whisper_tiny_sized_encoder_on_30s_is_about_18_5_gmacs() -> None:
    assert gmacs_at_length(build_encoder("whisper-tiny-like"), n_mels=80, n_frames=3000) == pytest.approx(
        18.47, abs=0.01
    )


def test_transformer_macs_include_the_attention_matmuls() -> None:
    n_mels, d, layers, ffn, frames = 8, 16, 2, 32, 40
    encoder = TransformerEncoder(TransformerConfig(n_mels=n_mels, d_model=d, n_layers=layers, n_heads=2, ffn_dim=ffn))
    t = frames // 2
    stem = frames * n_mels * d * 3 + t * d * d * 3
    projections_and_mlp = layers * t * (4 * d * d + 2 * d * ffn)
    attention = layers * 2 * t * t * d  # scores QK^T and weights x V
    macs = count_macs(encoder, torch.zeros(1, n_mels, frames), torch.ones(1, frames, dtype=torch.bool))
    assert macs == stem + projections_and_mlp + attention


def test_linear_layer_macs_are_inputs_times_outputs_per_row() -> None:
    class Linear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(10, 3)

        def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.layer(features)

    assert count_macs(Linear(), torch.zeros(4, 10), torch.ones(4, dtype=torch.bool)) == 4 * 10 * 3


def test_counting_leaves_the_training_mode_as_it_was() -> None:
    encoder = build_encoder("conv-50k").train()
    assert gmacs_at_length(encoder, 80, 200) > 0
    assert encoder.training
