"""Specification of the packed model file (quads.compression.packed): exact round trips, size on disk, and refusal of
anything that is not an intact file we wrote."""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
import warnings
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors import safe_open
from torch import nn

import quads
from quads.compression.codebook import QuantizedTensor, pack_indices
from quads.compression.packed import (
    FORMAT_VERSION,
    READABLE_VERSIONS,
    ModelFileError,
    TensorEntry,
    save_packed,
    theoretical_bytes,
)
from quads.compression.packed_reader import load_packed, read_packed_header, read_packed_metadata, tensor_entries
from quads.compression.quantize import CodebookQuantizer, post_training_quantize
from quads.compression.spec import QuantizationSpec
from quads.errors import ConfigError

METADATA = {"architecture": {"kind": "mlp", "width": 64}, "frontend": {"n_mels": 80}, "labels": ["on", "off"]}


class MixedWidths(nn.Module):
    """One 64x64 layer per width, plus biases and a norm that stay float."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleDict({f"b{bits}": nn.Linear(64, 64) for bits in (1, 2, 3, 4, 8, 16, 32)})
        self.norm = nn.LayerNorm(64)


def finished_quantizer(model: nn.Module, spec: QuantizationSpec, codebook_dtype=torch.float16) -> CodebookQuantizer:
    """What the training loop does at the end: round the codebooks to the file's dtype, then hard-snap."""
    quantizer = CodebookQuantizer(model, spec)
    if codebook_dtype is not None:
        quantizer.round_centroids_to(codebook_dtype)
    quantizer.hard_snap()
    return quantizer


def save_model(path: Path, model: nn.Module, quantizer: CodebookQuantizer, **kwargs):
    quantized = quantizer.export()
    float_state = {name: t for name, t in model.state_dict().items() if name not in quantized}
    return save_packed(path, float_state, quantized, METADATA, **kwargs)


@pytest.fixture
def packed_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = MixedWidths()
    spec = QuantizationSpec(bits=4, per_layer={f"layers.b{bits}.weight": bits for bits in (1, 2, 3, 4, 8, 16, 32)})
    save_model(tmp_path / "model.quads", model, finished_quantizer(model, spec))
    return tmp_path / "model.quads"


def rewrite(path: Path, mutate_document=None, mutate_tensors=None) -> None:
    """Re-save a packed file as a valid safetensors file with its document and/or tensors changed."""
    tensors = safetensors.torch.load(path.read_bytes())
    with safe_open(str(path), framework="pt") as handle:
        document = json.loads(handle.metadata()["quads"])
    if mutate_document:
        mutate_document(document)
    if mutate_tensors:
        mutate_tensors(tensors)
    path.write_bytes(safetensors.torch.save(tensors, metadata={"quads": json.dumps(document)}))


# ------------------------------------------------------------------------------------------------ round trips


def test_every_width_round_trips_to_exactly_the_snapped_weights(tmp_path):
    torch.manual_seed(0)
    model = MixedWidths()
    spec = QuantizationSpec(bits=4, per_layer={f"layers.b{bits}.weight": bits for bits in (1, 2, 3, 4, 8, 16, 32)})
    quantizer = finished_quantizer(model, spec)
    assert quantizer.bits == {f"layers.b{bits}.weight": bits for bits in (1, 2, 3, 4, 8, 16)}
    save_model(tmp_path / "model.quads", model, quantizer)

    state, metadata = load_packed(tmp_path / "model.quads")
    assert metadata == METADATA
    assert set(state) == set(model.state_dict())
    for name, tensor in model.state_dict().items():
        assert state[name].dtype == torch.float32
        assert torch.equal(state[name], tensor), name


def test_a_loaded_model_predicts_exactly_what_the_trained_one_did(packed_file, tmp_path):
    torch.manual_seed(0)
    trained = MixedWidths()
    spec = QuantizationSpec(bits=4, per_layer={f"layers.b{bits}.weight": bits for bits in (1, 2, 3, 4, 8, 16, 32)})
    finished_quantizer(trained, spec)
    loaded = MixedWidths()
    loaded.load_state_dict(load_packed(packed_file)[0])
    inputs = torch.randn(5, 64)
    for name, layer in trained.layers.items():
        assert torch.equal(layer(inputs), loaded.layers[name](inputs)), name


def test_float32_codebooks_keep_unrounded_centroids_exactly(tmp_path):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))
    quantizer = finished_quantizer(model, QuantizationSpec(bits=3), codebook_dtype=None)
    info = save_model(tmp_path / "model.quads", model, quantizer, codebook_dtype="float32")
    state, _ = load_packed(info.path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(state[name], tensor), name
    with safe_open(str(info.path), framework="pt") as handle:
        assert handle.get_tensor("codebooks").dtype == torch.float32


def test_any_safetensors_reader_lists_four_blobs_of_bit_packed_indices_codebooks_and_floats(packed_file):
    with safe_open(str(packed_file), framework="pt") as handle:
        blobs = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    assert set(blobs) == {"indices", "codebooks", "float16", "float32"}
    assert blobs["indices"].dtype == torch.uint8
    assert blobs["indices"].numel() == sum(64 * 64 * bits // 8 for bits in (1, 2, 3, 4, 8))
    assert blobs["codebooks"].dtype == torch.float16
    assert blobs["codebooks"].numel() == sum(2**bits for bits in (1, 2, 3, 4, 8))
    assert blobs["float16"].numel() == 64 * 64
    assert blobs["float32"].numel() == 64 * 64 + 7 * 64 + 2 * 64  # the 32-bit layer, the biases, the norm


def test_metadata_and_the_tensor_table_can_be_read_from_the_header_alone(packed_file):
    assert read_packed_metadata(packed_file) == METADATA
    header = read_packed_header(packed_file)
    assert header["format"] == "quads-packed" and header["format_version"] == FORMAT_VERSION == 2
    entries = {entry.name: entry for entry in tensor_entries(header)}
    assert entries["layers.b3.weight"] == TensorEntry("layers.b3.weight", 3, (64, 64), "float16")
    assert entries["layers.b16.weight"].dtype == "float16"
    assert entries["layers.b3.bias"] == TensorEntry("layers.b3.bias", 32, (64,), "float32")
    assert len(header["sha256"]) == 64


def test_integer_buffers_keep_their_dtype(tmp_path):
    float_state = {"steps": torch.tensor([3, 4], dtype=torch.int64), "scale": torch.tensor([0.5], dtype=torch.float64)}
    save_packed(tmp_path / "m.quads", float_state, {}, {})
    state, _ = load_packed(tmp_path / "m.quads")
    assert state["steps"].dtype == torch.int64 and state["steps"].tolist() == [3, 4]
    assert state["scale"].dtype == torch.float32


# ------------------------------------------------------------------------------------------------ sizes


def million_parameter_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*(nn.Linear(512, 512) for _ in range(4)))  # 1,050,624 parameters


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_size_on_disk_is_the_theoretical_size_plus_a_small_header(tmp_path, bits):
    model = million_parameter_model()
    quantizer = finished_quantizer(model, QuantizationSpec(bits=bits))
    info = save_model(tmp_path / "model.quads", model, quantizer)
    assert info.file_bytes == (tmp_path / "model.quads").stat().st_size
    params = 4 * 512 * 512
    expected = params * bits // 8 + 4 * 2 * 2**bits + 4 * 512 * 4  # indices + fp16 codebooks + fp32 biases
    assert info.theoretical_bytes == expected == quantizer.summary()["theoretical_bytes"]
    assert info.file_bytes - info.header_bytes == info.theoretical_bytes  # the payload is exactly the theory
    assert info.header_bytes < 4096
    assert info.file_bytes <= 1.05 * info.theoretical_bytes
    assert info.params_by_bits == {bits: params, 32: 4 * 512}


def test_theoretical_bytes_counts_float32_codebooks_at_four_bytes():
    quantized = {"w": QuantizedTensor(2, (10, 10), indices=torch.zeros(100, dtype=torch.uint8),
                                      centroids=torch.zeros(4))}
    float_state = {"b": torch.zeros(10)}
    assert theoretical_bytes(float_state, quantized, "float16") == 25 + 8 + 40
    assert theoretical_bytes(float_state, quantized, "float32") == 25 + 16 + 40


# ------------------------------------------------------------------------------------------------ saving


def test_saving_replaces_the_file_atomically_and_leaves_no_temporary_files(packed_file):
    first = packed_file.read_bytes()
    model = nn.Linear(64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantizer = finished_quantizer(model, QuantizationSpec(bits=2))
    save_model(packed_file, model, quantizer)
    assert packed_file.read_bytes() != first
    assert sorted(p.name for p in packed_file.parent.iterdir()) == [packed_file.name]


def test_metadata_that_is_not_json_is_a_config_error_and_writes_nothing(tmp_path):
    with pytest.raises(ConfigError, match="JSON"):
        save_packed(tmp_path / "m.quads", {"b": torch.zeros(2)}, {}, {"when": object()})
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_codebook_dtype_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="codebook_dtype"):
        save_packed(tmp_path / "m.quads", {}, {}, {}, codebook_dtype="bfloat16")


def test_a_codebook_beyond_float16_range_is_a_config_error(tmp_path):
    huge = QuantizedTensor(1, (8,), indices=torch.zeros(8, dtype=torch.uint8), centroids=torch.tensor([0.0, 1e6]))
    with pytest.raises(ConfigError, match="float32"):
        save_packed(tmp_path / "m.quads", {}, {"w": huge}, {})


# ------------------------------------------------------------------------------------------------ bad files


def test_a_missing_file_is_a_model_file_error(tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        load_packed(tmp_path / "absent.quads")
    with pytest.raises(ModelFileError, match="folder"):
        load_packed(tmp_path)


@pytest.mark.parametrize("content", [b"", b"abc", b"garbage garbage garbage", struct.pack("<Q", 5) + b"{}]]]",
                                     pickle.dumps({"weights": [1, 2, 3]})])
def test_garbage_is_not_a_quads_model_file(tmp_path, content):
    path = tmp_path / "garbage.quads"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="not a quads packed model file"):
        load_packed(path)
    with pytest.raises(ModelFileError, match="not a quads packed model file"):
        read_packed_metadata(path)


def test_a_torch_checkpoint_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": nn.Linear(2, 2).state_dict()}, path)
    with pytest.raises(ModelFileError, match="not a quads packed model file"):
        load_packed(path)


def test_a_safetensors_file_without_quads_metadata_is_refused(tmp_path):
    path = tmp_path / "plain.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(3)}, str(path))
    with pytest.raises(ModelFileError, match="without quads metadata"):
        load_packed(path)


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_a_truncated_file_is_refused(packed_file, keep):
    data = packed_file.read_bytes()
    packed_file.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelFileError, match="truncated"):
        load_packed(packed_file)


def test_a_truncated_header_is_refused(packed_file):
    packed_file.write_bytes(packed_file.read_bytes()[:200])
    with pytest.raises(ModelFileError, match="truncated"):
        load_packed(packed_file)


def test_a_flipped_byte_in_the_payload_is_detected(packed_file):
    data = bytearray(packed_file.read_bytes())
    data[-100] ^= 0x01
    packed_file.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="modified or corrupted"):
        load_packed(packed_file)


def test_tampered_metadata_is_detected(packed_file):
    rewrite(packed_file, mutate_document=lambda doc: doc["metadata"]["labels"].reverse())
    with pytest.raises(ModelFileError, match="modified or corrupted"):
        load_packed(packed_file)


def test_a_replaced_codebook_is_detected(packed_file):
    rewrite(packed_file, mutate_tensors=lambda t: t["codebooks"][2:6].mul_(2))
    with pytest.raises(ModelFileError, match="modified or corrupted"):
        load_packed(packed_file)


def test_a_missing_blob_is_named(packed_file):
    rewrite(packed_file, mutate_tensors=lambda t: t.pop("indices"))
    with pytest.raises(ModelFileError, match=r"blob 'indices' is missing"):
        load_packed(packed_file)


def test_a_blob_that_does_not_match_the_tensor_table_is_named(packed_file):
    rewrite(packed_file, mutate_tensors=lambda t: t.update(float32=t["float32"][:-1].clone()))
    with pytest.raises(ModelFileError, match=r"blob 'float32' holds .* needs"):
        load_packed(packed_file)


def test_a_file_from_a_newer_quads_asks_for_an_upgrade(packed_file):
    newer = max(READABLE_VERSIONS) + 1
    rewrite(packed_file, mutate_document=lambda doc: doc.update(format_version=newer))
    message = f"written by a newer quads \\(format {newer}.*reads formats 1, 2, 3: upgrade"
    with pytest.raises(ModelFileError, match=message):
        load_packed(packed_file)
    with pytest.raises(ModelFileError, match=message):
        read_packed_metadata(packed_file)


def test_a_file_of_another_format_is_refused(packed_file):
    rewrite(packed_file, mutate_document=lambda doc: doc.update(format="something-else"))
    with pytest.raises(ModelFileError, match="format 'something-else'"):
        load_packed(packed_file)


# ------------------------------------------------------------------------------------------------ version 1 files


def save_version1(path: Path, float_state: dict, quantized: dict, metadata: dict) -> None:
    """The version-1 writer (quads before format 2), kept minimal: one entry per stored piece, a dict per tensor."""
    tensors, info = {}, {}
    for name, qt in quantized.items():
        info[name] = {"bits": qt.bits, "shape": list(qt.shape), "dtype": "float32", "numel": qt.numel}
        if qt.bits == 16:
            tensors[name] = qt.values.to(torch.float16).reshape(qt.shape).contiguous()
        else:
            tensors[name + ".qidx"] = pack_indices(qt.indices, qt.bits)
            tensors[name + ".qcb"] = qt.centroids.to(torch.float16).reshape(-1).contiguous()
    for name, tensor in float_state.items():
        stored = (tensor.float() if tensor.is_floating_point() else tensor).contiguous()
        info[name] = {"bits": 32, "shape": list(stored.shape), "dtype": str(stored.dtype)[6:], "numel": stored.numel()}
        tensors[name] = stored
    document = {"format": "quads-packed", "format_version": 1, "quads_version": "0.1.0", "codebook_dtype": "float16",
                "tensors": info, "metadata": metadata}
    hasher = hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode())
    for key in sorted(tensors):
        tensor = tensors[key]
        hasher.update(f"\0{key}\0{str(tensor.dtype)[6:]}\0{list(tensor.shape)}\0".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    document["sha256"] = hasher.hexdigest()
    path.write_bytes(safetensors.torch.save(tensors, metadata={"quads": json.dumps(document)}))


def test_a_version_1_file_still_loads_to_the_same_weights_as_version_2(tmp_path):
    torch.manual_seed(0)
    model = MixedWidths()
    spec = QuantizationSpec(bits=4, per_layer={f"layers.b{bits}.weight": bits for bits in (1, 2, 3, 4, 8, 16, 32)})
    quantized = finished_quantizer(model, spec).export()
    float_state = {name: t for name, t in model.state_dict().items() if name not in quantized}
    save_version1(tmp_path / "v1.quads", float_state, quantized, METADATA)
    save_packed(tmp_path / "v2.quads", float_state, quantized, METADATA)

    assert read_packed_header(tmp_path / "v1.quads")["format_version"] == 1
    assert tensor_entries(read_packed_header(tmp_path / "v1.quads")) == tensor_entries(
        read_packed_header(tmp_path / "v2.quads"))
    old, old_metadata = load_packed(tmp_path / "v1.quads")
    new, _ = load_packed(tmp_path / "v2.quads")
    assert old_metadata == METADATA and set(old) == set(new) == set(model.state_dict())
    for name, tensor in model.state_dict().items():
        assert torch.equal(old[name], tensor) and torch.equal(new[name], tensor), name


def test_a_version_1_student_predicts_what_it_predicted(tmp_path):
    from quads.models import build_student
    from quads.runtime.model import load

    torch.manual_seed(0)
    classifier = build_student(num_labels=5, encoder="conv-50k", n_mels=80, head="mlp").eval()
    quantized = post_training_quantize(classifier, QuantizationSpec(bits=2)).export()
    float_state = {name: t for name, t in classifier.state_dict().items() if name not in quantized}
    metadata = {"architecture": classifier.config_dict(),
                "frontend": {"n_mels": 80, "sample_rate": 16000, "n_fft": 400, "hop_length": 160},
                "labels": list("abcde")}
    save_version1(tmp_path / "v1.quads", float_state, quantized, metadata)
    save_packed(tmp_path / "v2.quads", float_state, quantized, metadata)

    features, mask = torch.randn(3, 80, 120), torch.ones(3, 120, dtype=torch.bool)
    mask[1, 70:] = False
    with torch.no_grad():
        expected = classifier(features, mask).logits
        for name in ("v1.quads", "v2.quads"):
            assert torch.equal(load(tmp_path / name)(features, mask).logits, expected), name


# ------------------------------------------------------------------------------------------------ the demo student


@pytest.mark.parametrize("bits", [4, 2])
def test_a_conv_200k_student_file_is_within_5_percent_and_2_kib_of_its_payload(tmp_path, bits):
    from quads.models import build_student

    rows = (Path(quads.__file__).parent / "resources" / "command_phrases.tsv").read_text().splitlines()[1:]
    labels = sorted({"_".join(row.split("\t")[1:4]) for row in rows})  # the built-in corpus's 31 intents
    torch.manual_seed(0)
    classifier = build_student(num_labels=len(labels), encoder="conv-200k", n_mels=80, head="mlp")
    quantized = post_training_quantize(classifier, QuantizationSpec(bits=bits)).export()
    float_state = {name: t for name, t in classifier.state_dict().items() if name not in quantized}
    metadata = {"architecture": classifier.config_dict(), "frontend": {"n_mels": 80, "sample_rate": 16000,
                "n_fft": 400, "hop_length": 160}, "labels": labels, "recipe": "quads", "bits": bits,
                "metrics": {"valid_accuracy": 0.9817, "test_accuracy": 0.9734}}
    info = save_packed(tmp_path / "student.quads", float_state, quantized, metadata)
    assert info.file_bytes - info.header_bytes == info.theoretical_bytes
    assert info.file_bytes <= 1.05 * info.theoretical_bytes + 2048, (info.file_bytes, info.theoretical_bytes)


# ------------------------------------------------------------------------------------------------ group codebooks


def test_group_codebooks_round_trip_in_a_version_3_file_and_plain_files_stay_version_2(tmp_path):
    torch.manual_seed(0)
    model = MixedWidths()
    spec = QuantizationSpec(bits=4, per_layer={f"layers.b{bits}.weight": bits for bits in (1, 2, 3, 4, 8, 16, 32)},
                            weights_per_centroid=16)
    quantizer = finished_quantizer(model, spec)
    info = save_model(tmp_path / "grouped.quads", model, quantizer)
    document = read_packed_header(tmp_path / "grouped.quads")
    assert document["format_version"] == 3
    groups = {entry.name: entry.group_len for entry in tensor_entries(document)}
    assert groups["layers.b2.weight"] == 64 and groups["layers.b4.weight"] == 4 * 64  # whole rows, ~16 * 2^b
    assert groups["layers.b8.weight"] == 0  # 16 * 256 weights is the whole 64x64 tensor: one codebook
    state, _ = load_packed(tmp_path / "grouped.quads")
    for name, tensor in model.state_dict().items():
        assert torch.equal(state[name], tensor), name
    assert info.theoretical_bytes == theoretical_bytes(
        {n: t for n, t in model.state_dict().items() if n not in quantizer.export()}, quantizer.export())
    assert info.file_bytes - info.theoretical_bytes < 2048

    save_model(tmp_path / "plain.quads", model, finished_quantizer(MixedWidths(), QuantizationSpec(bits=2)))
    assert read_packed_header(tmp_path / "plain.quads")["format_version"] == FORMAT_VERSION == 2


def test_a_group_length_in_a_version_2_file_or_a_bad_one_is_a_damaged_file(tmp_path):
    torch.manual_seed(0)
    model = MixedWidths()
    grouped = finished_quantizer(model, QuantizationSpec(bits=2, weights_per_centroid=16))
    save_model(tmp_path / "m.quads", model, grouped)

    def set_group(document, version, group_len):
        document["format_version"] = version
        next(row for row in document["tensors"] if len(row) == 4)[3] = group_len

    for version, group_len in ((2, 64), (3, 0), (3, "64"), (3, 128)):
        path = tmp_path / f"bad-{version}-{group_len}.quads"
        path.write_bytes((tmp_path / "m.quads").read_bytes())
        rewrite(path, mutate_document=lambda doc, v=version, g=group_len: set_group(doc, v, g))
        with pytest.raises(ModelFileError, match="damaged model file"):
            load_packed(path)
