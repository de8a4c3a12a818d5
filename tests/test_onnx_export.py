"""ONNX export of a student: onnxruntime agrees with PyTorch at lengths other than the traced one, with padded
rows, for conv and transformer students; the file is written atomically; mismatches are ConfigErrors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from quads.errors import ConfigError
from quads.models import IntentClassifier, build_student
from quads.onnx_export import export_onnx, onnx_session, verify_onnx

STUDENTS = {
    "conv": dict(encoder="conv-50k", n_mels=80, head="mlp"),
    "transformer": dict(encoder="transformer-250k", n_mels=80, d_model=32, n_layers=2, ffn_dim=64),
}


def student(name: str) -> IntentClassifier:
    torch.manual_seed(0)
    return build_student(num_labels=7, **STUDENTS[name])


def padded(frames: int, n_mels: int = 80) -> tuple[torch.Tensor, torch.Tensor]:
    features = torch.randn(3, n_mels, frames, generator=torch.Generator().manual_seed(frames))
    mask = torch.ones(3, frames, dtype=torch.bool)
    mask[1, frames // 3 :] = False
    mask[2, frames - 5 :] = False
    return features.masked_fill(~mask[:, None, :], 0.0), mask


@pytest.mark.parametrize("name", list(STUDENTS))
def test_onnx_logits_match_pytorch_at_two_lengths_with_padding(tmp_path: Path, name: str) -> None:
    classifier = student(name)
    path = export_onnx(classifier, tmp_path / "student.onnx", n_mels=80)
    for frames in (48, 333):
        assert verify_onnx(classifier, path, *padded(frames)) < 1e-4
    assert verify_onnx(classifier, path) < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.onnx"]  # no temporary file left behind


def test_exported_graph_has_dynamic_batch_and_time_and_returns_logits(tmp_path: Path) -> None:
    classifier = student("transformer")
    session = onnx_session(export_onnx(classifier, tmp_path / "m.onnx", n_mels=80))
    assert [i.name for i in session.get_inputs()] == ["features", "mask"]
    assert session.get_inputs()[0].shape == ["batch", 80, "frames"]
    features, mask = padded(91)
    (logits,) = session.run(None, {"features": features[:1].numpy(), "mask": mask[:1].numpy()})
    assert logits.shape == (1, 7)


def test_export_keeps_the_training_mode_and_rejects_a_mel_mismatch(tmp_path: Path) -> None:
    classifier = student("conv").train()
    export_onnx(classifier, tmp_path / "m.onnx", n_mels=80)
    assert classifier.training
    with pytest.raises(ConfigError, match=r"128 .*80 mel bins"):
        export_onnx(classifier, tmp_path / "other.onnx", n_mels=128)
    assert not (tmp_path / "other.onnx").exists()


def test_missing_or_corrupt_onnx_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        onnx_session(tmp_path / "absent.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="not a loadable ONNX model"):
        onnx_session(tmp_path / "bad.onnx")
