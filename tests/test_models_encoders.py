"""The built-in student encoders: padding never changes a real output, configs rebuild the same model, presets
span the advertised sizes, and bad shapes or settings are reported as ConfigError."""

from __future__ import annotations

import json

import pytest
import torch

from quads.errors import ConfigError
from quads.models import (
    CONV_PRESETS,
    TRANSFORMER_PRESETS,
    ConvConfig,
    ConvEncoder,
    TransformerConfig,
    TransformerEncoder,
    build_encoder,
    masked_mean_pool,
    preset_config,
)
from quads.models.encoder import conv_output_mask

TINY_ENCODERS = {
    "conv": lambda: ConvEncoder(
        ConvConfig(n_mels=16, stem_channels=8, stage_channels=(12, 16), stage_strides=(2, 2), stage_blocks=(1, 2))
    ),
    "conv-stride-3": lambda: ConvEncoder(
        ConvConfig(
            n_mels=16, stem_channels=8, stem_stride=3, stage_channels=(12,), stage_strides=(2,), stage_blocks=(2,)
        )
    ),
    "transformer": lambda: TransformerEncoder(
        TransformerConfig(n_mels=16, d_model=16, n_layers=2, n_heads=2, ffn_dim=32)
    ),
}


def padded_batch(lengths: list[int], n_mels: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    longest = max(lengths)
    features = torch.randn(len(lengths), n_mels, longest, generator=generator)
    mask = torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None]
    # Padding filled with garbage, not zeros: the encoder itself must ignore it.
    features = torch.where(mask[:, None, :], features, torch.full_like(features, 7.0))
    return features, mask


@pytest.mark.parametrize("name", list(TINY_ENCODERS))
@pytest.mark.parametrize("length", [1, 2, 13, 40, 57])
def test_utterance_alone_and_in_padded_batch_pool_to_the_same_embedding(name: str, length: int) -> None:
    torch.manual_seed(0)
    encoder = TINY_ENCODERS[name]().eval()
    features, mask = padded_batch([length, 64, 31], n_mels=16)
    with torch.no_grad():
        frames, frame_mask = encoder(features, mask)
        alone_frames, alone_mask = encoder(features[:1, :, :length], mask[:1, :length])
    assert alone_mask.all()
    assert torch.equal(frame_mask[0, : alone_mask.shape[1]], alone_mask[0])
    assert not frame_mask[0, alone_mask.shape[1] :].any()
    torch.testing.assert_close(
        masked_mean_pool(frames, frame_mask)[0], masked_mean_pool(alone_frames, alone_mask)[0], atol=1e-5, rtol=0
    )
    torch.testing.assert_close(frames[0, : alone_frames.shape[1]], alone_frames[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(TINY_ENCODERS))
def test_encoder_output_has_embed_dim_and_subsampled_frame_count(name: str) -> None:
    encoder = TINY_ENCODERS[name]().eval()
    features, mask = padded_batch([50, 100], n_mels=16)
    frames, frame_mask = encoder(features, mask)
    stride = encoder.config.total_stride if isinstance(encoder, ConvEncoder) else 2
    expected = -(-100 // stride)  # ceil: every strided layer keeps ceil(T / stride) frames
    assert frames.shape == (2, expected, encoder.embed_dim)
    assert frame_mask.sum(dim=1).tolist() == [-(-50 // stride), expected]


def test_conv_output_mask_counts_frames_like_conv1d() -> None:
    for length in range(1, 30):
        for kernel, stride, padding in [(3, 2, 1), (5, 2, 2), (3, 1, 1), (7, 3, 3), (1, 2, 0)]:
            conv = torch.nn.Conv1d(1, 1, kernel, stride=stride, padding=padding)
            produced = conv(torch.zeros(1, 1, length)).shape[-1]
            mask = torch.ones(1, 40, dtype=torch.bool)
            mask[0, length:] = False
            assert int(conv_output_mask(mask, kernel, stride, padding, output_frames=40).sum()) == produced


def test_masked_mean_pool_ignores_padding_and_gives_zeros_without_frames() -> None:
    frames = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 5.0], [9.0, 9.0], [9.0, 9.0]]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    pooled = masked_mean_pool(frames, mask)
    assert pooled.tolist() == [[2.0, 3.0], [0.0, 0.0]]


@pytest.mark.parametrize("name", list(TINY_ENCODERS))
def test_config_dict_is_json_and_rebuilds_the_same_architecture(name: str) -> None:
    encoder = TINY_ENCODERS[name]()
    config = json.loads(json.dumps(encoder.config_dict()))
    rebuilt = build_encoder(config)
    assert type(rebuilt) is type(encoder)
    assert rebuilt.config_dict() == encoder.config_dict()
    rebuilt.load_state_dict(encoder.state_dict())  # same names and shapes
    features, mask = padded_batch([20, 9], n_mels=16)
    encoder.eval(), rebuilt.eval()
    torch.testing.assert_close(rebuilt(features, mask)[0], encoder(features, mask)[0])


def test_presets_span_50k_to_8m_parameters_and_conv_presets_downsample_8x() -> None:
    sizes = {name: build_encoder(name).num_parameters() for name in [*CONV_PRESETS, *TRANSFORMER_PRESETS]}
    assert 40_000 <= sizes["conv-50k"] <= 60_000
    assert 150_000 <= sizes["conv-200k"] <= 250_000
    assert 0.8e6 <= sizes["transformer-1m"] <= 1.2e6
    assert sizes["whisper-tiny-like"] == 7_632_384  # Whisper-tiny's encoder without its position table
    assert all(CONV_PRESETS[name].total_stride == 8 for name in CONV_PRESETS)


def test_whisper_tiny_like_preset_has_whisper_tiny_dimensions() -> None:
    config = preset_config("whisper-tiny-like")
    assert (config["d_model"], config["n_layers"], config["n_heads"], config["ffn_dim"], config["n_mels"]) == (
        384,
        4,
        6,
        1536,
        80,
    )


def test_features_with_the_wrong_number_of_mel_bins_are_a_config_error_naming_both() -> None:
    encoder = TINY_ENCODERS["conv"]()
    features, mask = padded_batch([10], n_mels=20)
    with pytest.raises(ConfigError, match=r"16 mel bins.*20"):
        encoder(features, mask)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"type": "transformer", "d_model": 30, "n_heads": 4}, "not divisible"),
        ({"type": "transformer", "d_modle": 64}, "did you mean 'd_model'"),
        ({"type": "conv", "stage_channels": [8, 16], "stage_strides": [2]}, "one entry per stage"),
        ({"type": "conv", "kernel_size": 4}, "odd"),
        ({"type": "lstm"}, "unknown encoder type"),
        ({"d_model": 64}, "'type' key"),
    ],
)
def test_invalid_encoder_configs_raise_config_error(config: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_encoder(config)


def test_unknown_preset_suggests_the_closest_name() -> None:
    with pytest.raises(ConfigError, match="conv-200k"):
        build_encoder("conv-200")


def test_attention_ignores_padded_keys_in_training_mode_too() -> None:
    torch.manual_seed(0)
    encoder = TransformerEncoder(TransformerConfig(n_mels=16, d_model=16, n_layers=1, n_heads=2, ffn_dim=32, dropout=0))
    features, mask = padded_batch([12, 40], n_mels=16)
    frames, _ = encoder.train()(features, mask)
    alone, _ = encoder(features[:1, :, :12], mask[:1, :12])
    torch.testing.assert_close(frames[0, :6], alone[0], atol=1e-5, rtol=0)
