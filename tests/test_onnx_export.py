"""ONNX export of a student: onnxruntime agrees with PyTorch at lengths other than the traced one, with padded
rows, for conv and transformer students; the file is written atomically; mismatches are ConfigErrors. With the
quantized tensors, the file holds their codebook form and still equals the packed model."""

from __future__ import annotations

import warnings
from dataclasses import asdict
from pathlib import Path

import onnx
import pytest
import torch
from onnx import numpy_helper

from quads.audio import FrontEndConfig
from quads.compression.packed import save_packed
from quads.compression.packed_reader import read_packed
from quads.compression.quantize import post_training_quantize
from quads.compression.spec import QuantizationSpec
from quads.errors import ConfigError
from quads.models import IntentClassifier, build_student
from quads.models.slots import slot_layout
from quads.runtime import onnx_codebook
from quads.runtime.model import PackedModel, load
from quads.runtime.onnx_export import export_onnx, onnx_session, verify_onnx

STUDENTS = {
    "conv": dict(encoder="conv-50k", n_mels=80, head="mlp"),
    "transformer": dict(encoder="transformer-250k", n_mels=80, d_model=32, n_layers=2, ffn_dim=64),
    "slots": dict(encoder="conv-50k", n_mels=80, head="slots",
                  slots=slot_layout(["on_lamp", "on_light", "off_lamp", "off_light", "up_heat", "down_heat", "up_tv"])),
}
OTHER_WIDTHS = {"conv": {"head.3.weight": 3}, "transformer": {"head.weight": 16},
                "slots": {"head.classifiers.0.2.weight": 3}}


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


# ------------------------------------------------------------------------------------------------ codebook form


def packed_student(tmp_path: Path, name: str, bits: int, per_layer: dict | None = None,
                   weights_per_centroid: int = 0) -> PackedModel:
    """A student quantized after training (random init here), saved and loaded as a packed file."""
    classifier = student(name).eval()
    spec = QuantizationSpec(bits=bits, per_layer=per_layer or {}, weights_per_centroid=weights_per_centroid)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tensors too small for their codebook stay float
        quantized = post_training_quantize(classifier, spec).export()
    float_state = {key: t for key, t in classifier.state_dict().items() if key not in quantized}
    metadata = {"architecture": classifier.config_dict(), "frontend": asdict(FrontEndConfig()),
                "labels": list("abcdefg")}
    save_packed(tmp_path / f"{name}{bits}.quads", float_state, quantized, metadata)
    return load(tmp_path / f"{name}{bits}.quads")


@pytest.mark.parametrize(("name", "bits", "weights_per_centroid"),
                         [(name, bits, 0) for name in STUDENTS for bits in (2, 4)]
                         + [("conv", 2, 50), ("transformer", 3, 8), ("slots", 4, 6)])
def test_codebook_onnx_equals_the_packed_model_and_holds_no_float_copy_of_its_weights(tmp_path, name, bits,
                                                                                       weights_per_centroid):
    model = packed_student(tmp_path, name, bits, OTHER_WIDTHS[name], weights_per_centroid)  # other widths too
    quantized = read_packed(tmp_path / f"{name}{bits}.quads").quantized
    assert any(tensor.groups > 1 for tensor in quantized.values()) == (weights_per_centroid > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every quantized tensor keeps its codebook form
        path = export_onnx(model.classifier, tmp_path / "codebook.onnx", n_mels=80, quantized=quantized)
    float_path = export_onnx(model.classifier, tmp_path / "float.onnx", n_mels=80)
    for frames in (1, 48, 333):
        assert verify_onnx(model.classifier, path, *padded(frames)) <= 1e-5
    assert verify_onnx(model.classifier, path) <= 1e-5

    graph = onnx.load(str(path)).graph
    floats = {numpy_helper.to_array(t).tobytes() for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    for key, tensor in quantized.items():
        weight = tensor.dequantize().numpy()
        assert weight.tobytes() not in floats and weight.T.copy().tobytes() not in floats, key
    assert path.stat().st_size < 0.5 * float_path.stat().st_size


def test_a_weight_onnxruntime_cannot_rebuild_stays_float_with_a_warning_naming_it(tmp_path, monkeypatch):
    model = packed_student(tmp_path, "conv", 2)
    quantized = read_packed(tmp_path / "conv2.quads").quantized
    unpack = onnx_codebook._Builder._unpack

    def broken_for_the_head(self, prefix, packed, bits, numel):
        output = unpack(self, prefix, packed, bits, numel)
        if prefix.startswith("head.0.weight"):
            return self.node("BitShift", [output, output], direction="SIDEWAYS")  # no such kernel
        return output

    monkeypatch.setattr(onnx_codebook._Builder, "_unpack", broken_for_the_head)
    with pytest.warns(UserWarning, match=r"head\.0\.weight \(2-bit\) is kept as float32") as caught:
        path = export_onnx(model.classifier, tmp_path / "m.onnx", n_mels=80, quantized=quantized)
    assert len(caught) == 1
    assert verify_onnx(model.classifier, path) <= 1e-5
    names = {t.name for t in onnx.load(str(path)).graph.initializer}
    assert {"encoder.blocks.0.pointwise.weight.T.indices", "head.3.weight.indices"} <= names
    assert not any(name.startswith("head.0.weight.") for name in names)
