"""IntentClassifier and the heads: outputs, z = pooled frames, rebuild from config, teacher heads on frames."""

from __future__ import annotations

import json

import pytest
import torch

from quads.errors import ConfigError
from quads.models import (
    ClassifierOutput,
    ConvConfig,
    ConvEncoder,
    IntentClassifier,
    TeacherHead,
    build_classifier,
    build_student,
    masked_mean_pool,
)


def tiny_classifier(head: str = "linear") -> IntentClassifier:
    torch.manual_seed(0)
    encoder = ConvEncoder(
        ConvConfig(n_mels=16, stem_channels=8, stage_channels=(12,), stage_strides=(2,), stage_blocks=(1,))
    )
    return IntentClassifier(encoder, num_labels=5, head=head).eval()


def batch(lengths: list[int], n_mels: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    features = torch.randn(len(lengths), n_mels, max(lengths), generator=torch.Generator().manual_seed(1))
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    return features, mask


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_classifier_returns_logits_per_label_and_embedding_equal_to_pooled_encoder_frames(head: str) -> None:
    classifier = tiny_classifier(head)
    features, mask = batch([30, 17])
    output = classifier(features, mask)
    assert isinstance(output, ClassifierOutput)
    assert output.logits.shape == (2, 5)
    frames, frame_mask = classifier.encoder(features, mask)
    torch.testing.assert_close(output.embedding, masked_mean_pool(frames, frame_mask))
    torch.testing.assert_close(output.logits, classifier.head(output.embedding))


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_classifier_config_dict_rebuilds_a_model_that_loads_the_weights_and_agrees(head: str) -> None:
    classifier = tiny_classifier(head)
    config = json.loads(json.dumps(classifier.config_dict()))
    rebuilt = build_classifier(config).eval()
    rebuilt.load_state_dict(classifier.state_dict())
    features, mask = batch([25, 9])
    torch.testing.assert_close(rebuilt(features, mask).logits, classifier(features, mask).logits)
    assert rebuilt.num_parameters() == classifier.num_parameters()


def test_build_student_applies_n_mels_and_overrides_to_a_preset() -> None:
    student = build_student("transformer-250k", num_labels=31, n_mels=128, d_model=32, n_layers=1)
    assert student.n_mels == 128 and student.embed_dim == 32 and len(student.encoder.blocks) == 1
    assert student(*batch([40], n_mels=128)).logits.shape == (1, 31)
    with pytest.raises(ConfigError, match="did you mean 'n_layers'"):
        build_student("transformer-250k", num_labels=31, n_layer=2)


def test_unknown_head_and_too_few_labels_are_config_errors() -> None:
    encoder = tiny_classifier().encoder
    with pytest.raises(ConfigError, match="unknown head"):
        IntentClassifier(encoder, 5, head="transformer")
    with pytest.raises(ConfigError, match="num_labels"):
        IntentClassifier(encoder, 1)
    with pytest.raises(ConfigError, match="unknown key 'kinds'"):
        build_classifier({"encoder": encoder.config_dict(), "num_labels": 5, "head": {"kinds": "linear"}})


@pytest.mark.parametrize("kind", ["linear", "mlp", "attention"])
def test_teacher_head_ignores_padded_frames(kind: str) -> None:
    torch.manual_seed(0)
    head = TeacherHead(96, 31, kind=kind).eval()
    frames = torch.randn(2, 20, 96)
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[0, 12:] = False
    frames[0, 12:] = 50.0
    output = head(frames, mask)
    alone = head(frames[:1, :12], mask[:1, :12])
    assert output.logits.shape == (2, 31) and output.embedding.shape == (2, 96)
    torch.testing.assert_close(output.logits[0], alone.logits[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(output.embedding[0], alone.embedding[0], atol=1e-5, rtol=0)


def test_linear_teacher_head_embedding_is_the_mean_of_the_given_frames() -> None:
    head = TeacherHead(8, 3, kind="linear")
    frames = torch.randn(1, 5, 8)
    output = head(frames, torch.ones(1, 5, dtype=torch.bool))
    torch.testing.assert_close(output.embedding, frames.mean(dim=1))


def test_only_the_attention_teacher_head_hears_word_order() -> None:
    torch.manual_seed(0)
    frames = torch.randn(1, 10, 32)
    reversed_frames = frames.flip(1)
    mask = torch.ones(1, 10, dtype=torch.bool)
    for kind, order_matters in [("linear", False), ("mlp", False), ("attention", True)]:
        head = TeacherHead(32, 4, kind=kind).eval()
        difference = (head(frames, mask).logits - head(reversed_frames, mask).logits).abs().max().item()
        assert (difference > 1e-4) == order_matters, kind


def test_teacher_head_config_dict_rebuilds_it() -> None:
    head = TeacherHead(96, 31, kind="attention", hidden_dim=64)
    rebuilt = TeacherHead(**json.loads(json.dumps(head.config_dict())))
    rebuilt.load_state_dict(head.state_dict())


def test_teacher_head_rejects_frames_of_the_wrong_width() -> None:
    with pytest.raises(ConfigError, match="96"):
        TeacherHead(96, 31)(torch.zeros(1, 4, 80), torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ConfigError, match="unknown teacher head"):
        TeacherHead(96, 31, kind="lstm")
