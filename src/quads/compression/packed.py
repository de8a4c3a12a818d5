"""The packed model file: one safetensors file whose size on disk is the model size we report.

Layout (format_version 2, or 3 when a tensor has one codebook per group of rows; files of version 1 still load):
- four blobs at most, whatever the number of tensors: `indices` (uint8: every codebook tensor's indices
  bit-packed by `quads.compression.codebook.pack_indices`, little-endian bit stream, index i in bits
  [i*b, (i+1)*b), each tensor starting on a byte), `codebooks` (every codebook's 2^b centroids, float16 by
  default or float32; a tensor split into G groups has its G codebooks in a row), `float16` (the 16-bit
  tensors) and `float32` (the float remainder: biases, norms, tensors kept at 32 bits); an integer buffer goes
  to a blob named after its dtype (`int64`...);
- the header's `__metadata__` holds one JSON document under the key "quads": `format` ("quads-packed"),
  `format_version`, `quads_version`, `codebook_dtype`, `tensors` (the compact table: one `[name, bits, shape]`
  per tensor, plus the dtype for an integer buffer or (version 3) the weights per group of a grouped tensor,
  in blob order: a tensor's place in its blobs is the sum of the sizes before it), the user's `metadata`
  (architecture, front-end, labels...), and `sha256`, a digest of that document and of every stored blob
  (name, dtype, shape, bytes), so any modification is detected.

One safetensors entry per tensor (version 1: `name.qidx`, `name.qcb`, `name`, and a dict per tensor in the
table) cost ~200 bytes of header per tensor: 19 % of a 2-bit conv-200k file. Now the header is the table and
the user metadata, and the file is within a few KB of `theoretical_bytes`.

Loading (`quads.compression.packed_reader`) reads safetensors only (no pickle, nothing from the file is
executed) and reports every problem with the file as a ModelFileError. It decodes (header, blobs, table into
per-tensor stored forms), checks the digest, then builds the float state dict: `read_packed` stops after the
checks and returns the stored forms (what an ONNX export with codebooks needs).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch
from torch import Tensor

from quads import __version__
from quads.atomic import atomic_write_bytes
from quads.compression.codebook import (
    FP16_BITS,
    QuantizedTensor,
    group_count,
    has_codebook,
    pack_indices,
    packed_size,
    validate_bits,
)
from quads.errors import ConfigError, QuadsError

FORMAT = "quads-packed"
FORMAT_VERSION = 2  # written unless a tensor has grouped codebooks (GROUPED_VERSION), so older quads read it
GROUPED_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
METADATA_KEY = "quads"
INDEX_BLOB = "indices"
CODEBOOK_BLOB = "codebooks"
INDEX_SUFFIX = ".qidx"  # version 1: one entry per tensor
CODEBOOK_SUFFIX = ".qcb"
CODEBOOK_DTYPES = {"float16": torch.float16, "float32": torch.float32}
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit


class ModelFileError(QuadsError):
    """A packed model file that cannot be read: not one, damaged, modified, or from a newer quads."""


@dataclass(frozen=True)
class PackedInfo:
    """What `save_packed` wrote: bytes on disk beside the theoretical size (bit-packed indices + codebooks +
    float16 tensors + float remainder); the difference is the safetensors header with our metadata."""

    path: Path
    file_bytes: int
    theoretical_bytes: int
    header_bytes: int
    params_by_bits: dict[int, int]


@dataclass(frozen=True)
class TensorEntry:
    """One row of the tensor table: `dtype` is the stored one (float16 for 16 bits, the codebook's for 1-8 bits,
    float32 or an integer dtype for 32 bits); `group_len` the weights per codebook (0: one codebook)."""

    name: str
    bits: int
    shape: tuple[int, ...]
    dtype: str
    group_len: int = 0

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def codebook_values(self) -> int:
        """Centroids the tensor stores: 2^b per codebook."""
        groups = group_count(self.numel, self.group_len) if self.group_len else 1
        return groups * 2**self.bits


@dataclass(frozen=True)
class PackedContents:
    """A checked packed file in its stored form: codebook tensors with unpacked uint8 indices and float32
    centroids, 16-bit tensors as float16 values, and the float remainder (float32 or integer buffers)."""

    document: dict
    quantized: dict[str, QuantizedTensor]
    float_state: dict[str, Tensor]

    @property
    def metadata(self) -> dict:
        return self.document["metadata"]

    def state_dict(self) -> dict[str, Tensor]:
        """Every tensor as the model uses it: float32 (codebooks dequantized), integer buffers as stored."""
        state = {name: tensor.dequantize() for name, tensor in self.quantized.items()}
        for name, tensor in self.float_state.items():
            state[name] = tensor.float() if tensor.is_floating_point() else tensor
        return state


# ---------------------------------------------------------------------------------------------- sizes


def _codebook_dtype(name: str) -> torch.dtype:
    if name not in CODEBOOK_DTYPES:
        raise ConfigError(f"codebook_dtype must be one of {sorted(CODEBOOK_DTYPES)}, got {name!r}")
    return CODEBOOK_DTYPES[name]


def _float_storage_dtype(tensor: Tensor) -> torch.dtype:
    return torch.float32 if tensor.is_floating_point() else tensor.dtype


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def theoretical_bytes(float_state: dict[str, Tensor], quantized: dict[str, QuantizedTensor],
                      codebook_dtype: str = "float16") -> int:
    """Σ ceil(numel·b/8) over codebook tensors + their codebooks + 2 bytes per float16 weight + the float
    remainder at 4 bytes per value (integer buffers at their own size): the payload, no header."""
    codebook_value_bytes = _codebook_dtype(codebook_dtype).itemsize
    total = 0
    for tensor in quantized.values():
        if tensor.bits == FP16_BITS:
            total += 2 * tensor.numel
        else:
            total += packed_size(tensor.numel, tensor.bits) + codebook_value_bytes * tensor.groups * 2**tensor.bits
    for tensor in float_state.values():
        total += tensor.numel() * _float_storage_dtype(tensor).itemsize
    return total


# ---------------------------------------------------------------------------------------------- saving


def content_digest(document: dict, tensors: dict[str, Tensor]) -> str:
    """SHA-256 of the JSON document (without its digest) and every stored tensor, in name order."""
    hasher = hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode())
    for key in sorted(tensors):
        tensor = tensors[key].contiguous()
        hasher.update(f"\0{key}\0{dtype_name(tensor.dtype)}\0{list(tensor.shape)}\0".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()


def save_packed(path: str | Path, float_state: dict[str, Tensor], quantized: dict[str, QuantizedTensor],
                metadata: dict, codebook_dtype: str = "float16") -> PackedInfo:
    """Write the packed model file atomically (temporary file + rename) and report its size.

    `float_state` holds the tensors stored as they are (floats as float32), `quantized` the codebook and
    float16 tensors (e.g. `CodebookQuantizer.export()`), `metadata` anything JSON-able the loader needs
    (architecture config, front-end config, label list). Centroids are rounded to `codebook_dtype`; call
    `CodebookQuantizer.round_centroids_to(torch.float16)` before the final `hard_snap()` so the model in
    memory and the file agree bit for bit.
    """
    path = Path(path)
    storage_dtype = _codebook_dtype(codebook_dtype)
    overlap = sorted(set(float_state) & set(quantized))
    if overlap:
        raise ValueError(f"tensors both float and quantized: {overlap[:5]}")
    parts: dict[str, list[Tensor]] = {}  # blob name -> its pieces, in table order
    table: list[list] = []
    params_by_bits: dict[int, int] = {}
    version = FORMAT_VERSION

    for name, qt in quantized.items():
        validate_bits(qt.bits)
        params_by_bits[qt.bits] = params_by_bits.get(qt.bits, 0) + qt.numel
        grouped = has_codebook(qt.bits) and qt.groups > 1
        table.append([name, qt.bits, list(qt.shape)] + ([qt.group_len] if grouped else []))
        version = GROUPED_VERSION if grouped else version
        if qt.bits == FP16_BITS:
            assert qt.values is not None
            parts.setdefault("float16", []).append(qt.values.detach().cpu().to(torch.float16).reshape(-1))
            continue
        assert qt.indices is not None and qt.centroids is not None
        centroids = qt.centroids.detach().cpu().to(storage_dtype).reshape(-1)
        if not bool(torch.isfinite(centroids).all()):
            raise ConfigError(f"{name}: its codebook does not fit in {codebook_dtype}; use codebook_dtype='float32'")
        parts.setdefault(INDEX_BLOB, []).append(pack_indices(qt.indices, qt.bits))
        parts.setdefault(CODEBOOK_BLOB, []).append(centroids)
    for name, tensor in float_state.items():
        stored = tensor.detach().cpu().to(_float_storage_dtype(tensor))
        params_by_bits[32] = params_by_bits.get(32, 0) + stored.numel()
        dtype = dtype_name(stored.dtype)
        table.append([name, 32, list(stored.shape)] + ([] if dtype == "float32" else [dtype]))
        if dtype in (INDEX_BLOB, CODEBOOK_BLOB):
            raise ValueError(f"{name}: dtype {dtype!r} clashes with a blob name")
        parts.setdefault(dtype, []).append(stored.reshape(-1))
    tensors = {blob: torch.cat(pieces).contiguous() for blob, pieces in parts.items()}

    document = {
        "format": FORMAT,
        "format_version": version,
        "quads_version": __version__,
        "codebook_dtype": codebook_dtype,
        "tensors": table,
        "metadata": metadata,
    }
    try:
        json.dumps(document, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model file metadata must be JSON-serialisable: {error}") from None
    document["sha256"] = content_digest(document, tensors)
    header = json.dumps(document, allow_nan=False, separators=(",", ":"))
    payload = safetensors.torch.save(tensors, metadata={METADATA_KEY: header})
    atomic_write_bytes(path, payload)
    header_bytes = 8 + int.from_bytes(payload[:8], "little")
    return PackedInfo(path=path, file_bytes=path.stat().st_size,
                      theoretical_bytes=theoretical_bytes(float_state, quantized, codebook_dtype),
                      header_bytes=header_bytes, params_by_bits=dict(sorted(params_by_bits.items())))
