"""What a packed model file may contain: every field checked before anything is allocated or built.

A valid SHA-256 only proves that a file was not changed after it was written, not that whoever wrote it was
quads: anyone can write a file with a correct digest. So `quads.load` checks the decoded contents too:

1. `check_model_metadata` (header only, nothing allocated): the front-end is exactly one quads writes; the
   architecture is a built-in conv, transformer or Whisper-cut student whose every size is a positive integer within
   bounds, and whose parameter count — counted on PyTorch's "meta" device, which allocates no memory — is at
   most `MAX_PARAMETERS` (15M: about twice the largest preset, whisper-tiny-like at 7.6M), so loading any
   file needs at most about twice the memory of loading the largest preset; the labels are distinct
   strings, one per output of the head; the file is no larger than those parameters can explain.
2. `check_tensor_table` (before any tensor is decoded): the stored tensors are exactly the architecture's,
   with its shapes, so dequantizing can never allocate more than the architecture's weights.
3. `check_model_state` (after decoding, before building): dtypes and finiteness (no NaN or Inf weights).

Every failure is a `ModelFileError` that names the file and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from quads.audio import HOP_LENGTH, N_FFT, SAMPLE_RATE, SUPPORTED_N_MELS
from quads.compression.packed import ModelFileError
from quads.errors import ConfigError, QuadsError
from quads.models.slots import check_layout

MAX_PARAMETERS = 15_000_000  # about 2x whisper-tiny-like (7.6M), the largest preset: at most 60 MB of float32
MAX_LABELS = 10_000
MAX_LABEL_CHARS = 1_000
MAX_WIDTH = 4_096  # channels, d_model, ffn_dim, head hidden_dim
MAX_DEPTH = 64  # conv blocks in all stages, transformer layers
MAX_STAGES = 8
MAX_KERNEL = 63
MAX_STRIDE = 8
MAX_HEADER_SLACK = 16 * 2**20  # a file may exceed its weights by the header (labels, metrics) and at most this
FRONTEND = {"sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "hop_length": HOP_LENGTH}  # what quads writes
STUDENT_ENCODERS = ("conv", "transformer", "whisper")
HEAD_KINDS = ("linear", "mlp", "norm", "slots")
POOLINGS = ("mean", "attention")
WHISPER_ACTIVATIONS = ("gelu", "gelu_new", "gelu_fast", "quick_gelu", "relu", "silu")
MAX_POSITIONS = 1_500  # Whisper's 30 s


@dataclass(frozen=True)
class ModelSpec:
    """A model file's architecture after its checks: what to build and which tensors it must hold."""

    architecture: dict[str, Any]
    frontend: dict[str, int]
    labels: list[str]
    parameters: int
    shapes: dict[str, tuple[int, ...]]  # state_dict name -> shape
    dtypes: dict[str, torch.dtype]


def _fail(path: Path, field: str, problem: str) -> ModelFileError:
    return ModelFileError(f"{path}: invalid model file: {field} {problem}")


def _integer(path: Path, field: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, field, f"must be an integer, got {value!r}"[:200])
    if not low <= value <= high:
        raise _fail(path, field, f"must lie in [{low}, {high}], got {value}")
    return value


def _fraction(path: Path, field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise _fail(path, field, f"must be a number in [0, 1), got {value!r}"[:200])
    return float(value)


def _mapping(path: Path, field: str, value: Any, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    if not isinstance(value, dict):
        raise _fail(path, field, f"must be a mapping, got {type(value).__name__}")
    missing = [key for key in required if key not in value]
    if missing:
        raise _fail(path, field, f"lacks {missing[0]!r}")
    unknown = sorted(str(key) for key in value if key not in required + optional)
    if unknown:
        raise _fail(path, field, f"has an unknown key {unknown[0][:100]!r}")
    return value


def check_frontend(path: Path, frontend: Any, n_mels: int) -> dict[str, int]:
    """The front-end must be one quads writes (16 kHz, n_fft 400, hop 160) with the encoder's mel bins."""
    frontend = _mapping(path, "frontend", frontend, ("n_mels", *FRONTEND))
    for key, expected in FRONTEND.items():
        value = frontend[key]
        if isinstance(value, bool) or not isinstance(value, int) or value != expected:
            raise _fail(path, f"frontend.{key}", f"must be {expected} (what quads writes), got {value!r}"[:200])
    if frontend["n_mels"] != n_mels or isinstance(frontend["n_mels"], bool):
        raise _fail(path, "frontend.n_mels", f"must equal the encoder's n_mels ({n_mels}), got {frontend['n_mels']!r}")
    return dict(frontend)


def _check_conv(path: Path, encoder: dict) -> None:
    keys = ("n_mels", "stem_channels", "stem_stride", "stage_channels", "stage_strides", "stage_blocks",
            "kernel_size", "dropout")
    _mapping(path, "architecture.encoder", encoder, ("type", *keys))
    _integer(path, "architecture.encoder.stem_channels", encoder["stem_channels"], 1, MAX_WIDTH)
    _integer(path, "architecture.encoder.stem_stride", encoder["stem_stride"], 1, MAX_STRIDE)
    kernel = _integer(path, "architecture.encoder.kernel_size", encoder["kernel_size"], 1, MAX_KERNEL)
    if kernel % 2 == 0:
        raise _fail(path, "architecture.encoder.kernel_size", f"must be odd, got {kernel}")
    _fraction(path, "architecture.encoder.dropout", encoder["dropout"])
    stages = None
    for key, high in (("stage_channels", MAX_WIDTH), ("stage_strides", MAX_STRIDE), ("stage_blocks", MAX_DEPTH)):
        values = encoder[key]
        field = f"architecture.encoder.{key}"
        if not isinstance(values, list) or not 1 <= len(values) <= MAX_STAGES:
            raise _fail(path, field, f"must be a list of 1 to {MAX_STAGES} integers, got {values!r}"[:200])
        if stages is not None and len(values) != stages:
            raise _fail(path, field, f"must have one entry per stage ({stages}), got {len(values)}")
        stages = len(values)
        for index, value in enumerate(values):
            _integer(path, f"{field}[{index}]", value, 1, high)
    if sum(encoder["stage_blocks"]) > MAX_DEPTH:
        raise _fail(path, "architecture.encoder.stage_blocks", f"must add up to at most {MAX_DEPTH} blocks, "
                    f"got {sum(encoder['stage_blocks'])}")


def _check_transformer(path: Path, encoder: dict) -> None:
    _mapping(path, "architecture.encoder", encoder, ("type", "n_mels", "d_model", "n_layers", "n_heads", "ffn_dim",
                                                     "dropout"))
    d_model = _integer(path, "architecture.encoder.d_model", encoder["d_model"], 2, MAX_WIDTH)
    _integer(path, "architecture.encoder.n_layers", encoder["n_layers"], 1, MAX_DEPTH)
    heads = _integer(path, "architecture.encoder.n_heads", encoder["n_heads"], 1, d_model)
    _integer(path, "architecture.encoder.ffn_dim", encoder["ffn_dim"], 1, MAX_WIDTH)
    _fraction(path, "architecture.encoder.dropout", encoder["dropout"])
    if d_model % heads or d_model % 2:
        raise _fail(path, "architecture.encoder.d_model", f"must be even and divisible by n_heads = {heads}, "
                    f"got {d_model}")


def _check_whisper(path: Path, encoder: dict) -> None:
    from quads.models.whisper import ENCODER_CONFIG_KEYS

    _mapping(path, "architecture.encoder", encoder, ("type", *ENCODER_CONFIG_KEYS))
    d_model = _integer(path, "architecture.encoder.d_model", encoder["d_model"], 2, MAX_WIDTH)
    _integer(path, "architecture.encoder.encoder_layers", encoder["encoder_layers"], 1, MAX_DEPTH)
    heads = _integer(path, "architecture.encoder.encoder_attention_heads", encoder["encoder_attention_heads"], 1,
                     d_model)
    _integer(path, "architecture.encoder.encoder_ffn_dim", encoder["encoder_ffn_dim"], 1, MAX_WIDTH)
    _integer(path, "architecture.encoder.max_source_positions", encoder["max_source_positions"], 1, MAX_POSITIONS)
    for key in ("dropout", "attention_dropout", "activation_dropout"):
        _fraction(path, f"architecture.encoder.{key}", encoder[key])
    if encoder["activation_function"] not in WHISPER_ACTIVATIONS:
        raise _fail(path, "architecture.encoder.activation_function", f"must be one of "
                    f"{', '.join(WHISPER_ACTIVATIONS)}, got {encoder['activation_function']!r}"[:200])
    if d_model % heads:
        raise _fail(path, "architecture.encoder.d_model", f"must be divisible by encoder_attention_heads = {heads}, "
                    f"got {d_model}")


def check_architecture(path: Path, architecture: Any) -> dict[str, Any]:
    """Types and ranges of every size, so that building on the meta device is cheap and cannot fail oddly."""
    architecture = _mapping(path, "architecture", architecture, ("encoder", "num_labels"), ("head",))
    encoder = architecture["encoder"]
    if not isinstance(encoder, dict) or encoder.get("type") not in STUDENT_ENCODERS:
        found = encoder.get("type") if isinstance(encoder, dict) else encoder
        raise _fail(path, "architecture.encoder.type", f"must be one of {', '.join(STUDENT_ENCODERS)}, "
                    f"got {found!r}"[:200])
    mels = "num_mel_bins" if encoder["type"] == "whisper" else "n_mels"
    if isinstance(encoder.get(mels), bool) or encoder.get(mels) not in SUPPORTED_N_MELS:
        raise _fail(path, f"architecture.encoder.{mels}", f"must be one of {SUPPORTED_N_MELS}, "
                    f"got {encoder.get(mels)!r}"[:200])
    {"conv": _check_conv, "transformer": _check_transformer, "whisper": _check_whisper}[encoder["type"]](path, encoder)
    _integer(path, "architecture.num_labels", architecture["num_labels"], 2, MAX_LABELS)
    head = architecture.get("head")
    if head is not None:
        head = _mapping(path, "architecture.head", head, (), ("kind", "hidden_dim", "dropout", "pooling", "slots"))
        if head.get("pooling", "mean") not in POOLINGS:
            raise _fail(path, "architecture.head.pooling", f"must be one of {', '.join(POOLINGS)}, "
                        f"got {head.get('pooling')!r}"[:200])
        if head.get("kind", "linear") not in HEAD_KINDS:
            raise _fail(path, "architecture.head.kind", f"must be one of {', '.join(HEAD_KINDS)}, "
                        f"got {head.get('kind')!r}"[:200])
        if head.get("hidden_dim") is not None:
            _integer(path, "architecture.head.hidden_dim", head["hidden_dim"], 1, MAX_WIDTH)
        if "dropout" in head:
            _fraction(path, "architecture.head.dropout", head["dropout"])
        if head.get("kind") == "slots" or "slots" in head:
            try:
                check_layout(head.get("slots"), architecture["num_labels"])
            except ConfigError as error:
                raise _fail(path, "architecture.head.slots", str(error)) from None
    return architecture


def check_labels(path: Path, labels: Any, num_labels: int) -> list[str]:
    if not isinstance(labels, list) or not all(isinstance(label, str) and label for label in labels):
        raise _fail(path, "labels", "must be a list of non-empty strings")
    if len(labels) != num_labels:
        raise _fail(path, "labels", f"lists {len(labels)} intents but the head has {num_labels} outputs")
    if len(set(labels)) != len(labels):
        raise _fail(path, "labels", "has duplicates")
    long = next((label for label in labels if len(label) > MAX_LABEL_CHARS), None)
    if long is not None:
        raise _fail(path, "labels", f"has a label longer than {MAX_LABEL_CHARS} characters")
    return list(labels)


def _meta_state(architecture: dict[str, Any]) -> tuple[int, dict[str, tuple[int, ...]], dict[str, torch.dtype]]:
    """Parameter count and state_dict shapes of the architecture, built on the meta device (no memory)."""
    from quads.models import build_classifier

    with torch.device("meta"):
        classifier = build_classifier(architecture)
    state = classifier.state_dict()
    parameters = sum(parameter.numel() for parameter in classifier.parameters())
    return parameters, {name: tuple(t.shape) for name, t in state.items()}, {name: t.dtype for name, t in state.items()}


def check_model_metadata(path: str | Path, metadata: Any, file_bytes: int | None = None) -> ModelSpec:
    """Check a packed model's metadata (from the header alone) before anything is read or built."""
    path = Path(path)
    metadata = _mapping(path, "metadata", metadata, ("architecture", "frontend", "labels"),
                        ("recipe", "bits", "metrics"))
    architecture = check_architecture(path, metadata["architecture"])
    encoder = architecture["encoder"]
    frontend = check_frontend(path, metadata["frontend"], encoder.get("n_mels", encoder.get("num_mel_bins")))
    labels = check_labels(path, metadata["labels"], architecture["num_labels"])
    if metadata.get("recipe") is not None and not isinstance(metadata["recipe"], str):
        raise _fail(path, "recipe", f"must be a string, got {type(metadata['recipe']).__name__}")
    if metadata.get("bits") is not None:
        _integer(path, "bits", metadata["bits"], 1, 32)
    metrics = metadata.get("metrics")
    if metrics is not None and not (isinstance(metrics, dict) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values())):
        raise _fail(path, "metrics", "must map names to numbers")
    try:
        parameters, shapes, dtypes = _meta_state(architecture)
    except (QuadsError, TypeError, ValueError, RuntimeError) as error:
        raise _fail(path, "architecture", f"cannot be built ({error})"[:300]) from None
    if parameters > MAX_PARAMETERS:
        raise _fail(path, "architecture", f"has {parameters:,} parameters, more than the {MAX_PARAMETERS:,} a quads "
                    "model file may hold")
    if file_bytes is not None and file_bytes > 4 * parameters + MAX_HEADER_SLACK:
        raise _fail(path, "size", f"is {file_bytes:,} bytes, more than {parameters:,} parameters can explain")
    return ModelSpec(architecture, frontend, labels, parameters, shapes, dtypes)


def check_tensor_table(path: str | Path, table: Mapping[str, tuple[int, ...]], spec: ModelSpec) -> None:
    """The file's tensors (name -> shape, from its header) are exactly the architecture's: nothing to decode
    beyond the model's own weights."""
    path = Path(path)
    missing = sorted(set(spec.shapes) - set(table))
    if missing:
        raise _fail(path, f"tensor {missing[0]!r}", "is missing")
    extra = sorted(set(table) - set(spec.shapes))
    if extra:
        raise _fail(path, f"tensor {extra[0][:100]!r}", "is not part of the architecture")
    for name, shape in table.items():
        if tuple(shape) != spec.shapes[name]:
            raise _fail(path, f"tensor {name!r}", f"has shape {list(shape)[:8]}, the architecture needs "
                        f"{list(spec.shapes[name])}")


def check_model_state(path: str | Path, state: Mapping[str, Tensor], spec: ModelSpec) -> None:
    """Decoded tensors: the architecture's names, shapes and dtypes, and finite values only."""
    path = Path(path)
    check_tensor_table(path, {name: tuple(tensor.shape) for name, tensor in state.items()}, spec)
    for name, tensor in state.items():
        expected = spec.dtypes[name]
        if tensor.dtype != expected:
            raise _fail(path, f"tensor {name!r}", f"has dtype {str(tensor.dtype).removeprefix('torch.')}, "
                        f"expected {str(expected).removeprefix('torch.')}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise _fail(path, f"tensor {name!r}", f"holds {bad} NaN or infinite values")

