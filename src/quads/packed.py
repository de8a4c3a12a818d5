"""The packed model file: one safetensors file whose size on disk is the model size we report.

Layout (format_version 1):
- a codebook tensor `name` (1/2/3/4/8 bits) is stored as `name.qidx`, its indices bit-packed as uint8
  (`quads.codebook.pack_indices`: little-endian bit stream, index i in bits [i*b, (i+1)*b)), and `name.qcb`,
  its 2^b centroids (float16 by default, or float32);
- a 16-bit tensor is stored under its own name as float16;
- the float remainder (biases, norms, tensors kept at 32 bits) under its own name as float32; integer
  buffers keep their dtype;
- the header's `__metadata__` holds one JSON document under the key "quads": `format` ("quads-packed"),
  `format_version`, `quads_version`, `codebook_dtype`, per-tensor info (`bits`, `shape`, `dtype` once loaded,
  `numel`), the user's `metadata` (architecture, front-end, labels...), and `sha256`, a digest of that
  document and of every stored tensor (name, dtype, shape, bytes), so any modification is detected.

Loading reads safetensors only (no pickle, nothing from the file is executed) and reports every problem with
the file as a ModelFileError.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch
from torch import Tensor

from quads import __version__
from quads.codebook import (
    FP16_BITS,
    QuantizedTensor,
    has_codebook,
    pack_indices,
    packed_size,
    unpack_indices,
    validate_bits,
)
from quads.errors import ConfigError, QuadsError

FORMAT = "quads-packed"
FORMAT_VERSION = 1
METADATA_KEY = "quads"
INDEX_SUFFIX = ".qidx"
CODEBOOK_SUFFIX = ".qcb"
CODEBOOK_DTYPES = {"float16": torch.float16, "float32": torch.float32}
_MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit


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


# ---------------------------------------------------------------------------------------------- sizes


def _codebook_dtype(name: str) -> torch.dtype:
    if name not in CODEBOOK_DTYPES:
        raise ConfigError(f"codebook_dtype must be one of {sorted(CODEBOOK_DTYPES)}, got {name!r}")
    return CODEBOOK_DTYPES[name]


def _float_storage_dtype(tensor: Tensor) -> torch.dtype:
    return torch.float32 if tensor.is_floating_point() else tensor.dtype


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
            total += packed_size(tensor.numel, tensor.bits) + codebook_value_bytes * 2**tensor.bits
    for tensor in float_state.values():
        total += tensor.numel() * _float_storage_dtype(tensor).itemsize
    return total


# ---------------------------------------------------------------------------------------------- saving


def _digest(document: dict, tensors: dict[str, Tensor]) -> str:
    """SHA-256 of the JSON document (without its digest) and every stored tensor, in name order."""
    hasher = hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode())
    for key in sorted(tensors):
        tensor = tensors[key].contiguous()
        hasher.update(f"\0{key}\0{str(tensor.dtype).removeprefix('torch.')}\0{list(tensor.shape)}\0".encode())
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
    tensors: dict[str, Tensor] = {}
    info: dict[str, dict] = {}
    params_by_bits: dict[int, int] = {}

    def store(key: str, tensor: Tensor) -> None:
        if key in tensors:
            raise ValueError(f"tensor name {key!r} collides with a {INDEX_SUFFIX}/{CODEBOOK_SUFFIX} key of the file")
        tensors[key] = tensor

    for name, qt in quantized.items():
        validate_bits(qt.bits)
        params_by_bits[qt.bits] = params_by_bits.get(qt.bits, 0) + qt.numel
        info[name] = {"bits": qt.bits, "shape": list(qt.shape), "dtype": "float32", "numel": qt.numel}
        if qt.bits == FP16_BITS:
            assert qt.values is not None
            store(name, qt.values.detach().cpu().to(torch.float16).reshape(qt.shape).contiguous().clone())
            continue
        assert qt.indices is not None and qt.centroids is not None
        centroids = qt.centroids.detach().cpu().to(storage_dtype).reshape(-1).contiguous().clone()
        if not bool(torch.isfinite(centroids).all()):
            raise ConfigError(f"{name}: its codebook does not fit in {codebook_dtype}; use codebook_dtype='float32'")
        store(name + INDEX_SUFFIX, pack_indices(qt.indices, qt.bits))
        store(name + CODEBOOK_SUFFIX, centroids)
    for name, tensor in float_state.items():
        stored = tensor.detach().cpu().to(_float_storage_dtype(tensor)).contiguous().clone()
        params_by_bits[32] = params_by_bits.get(32, 0) + stored.numel()
        info[name] = {"bits": 32, "shape": list(stored.shape), "dtype": str(stored.dtype).removeprefix("torch."),
                      "numel": stored.numel()}
        store(name, stored)

    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "quads_version": __version__,
        "codebook_dtype": codebook_dtype,
        "tensors": info,
        "metadata": metadata,
    }
    try:
        json.dumps(document, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model file metadata must be JSON-serialisable: {error}") from None
    document["sha256"] = _digest(document, tensors)
    payload = safetensors.torch.save(tensors, metadata={METADATA_KEY: json.dumps(document, allow_nan=False)})

    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    header_bytes = 8 + int.from_bytes(payload[:8], "little")
    return PackedInfo(path=path, file_bytes=path.stat().st_size,
                      theoretical_bytes=theoretical_bytes(float_state, quantized, codebook_dtype),
                      header_bytes=header_bytes, params_by_bits=dict(sorted(params_by_bits.items())))


# ---------------------------------------------------------------------------------------------- loading


def _read_bytes(path: Path, limit: int | None = None) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read() if limit is None else handle.read(limit)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a folder, not a packed model file") from None
    except OSError as error:
        raise ModelFileError(f"{path}: cannot read ({error.strerror})") from None


def _parse_header(path: Path, data: bytes, file_size: int) -> dict:
    """The quads document from a safetensors header, with format checks; no tensor is read."""
    not_ours = f"{path}: not a quads packed model file"
    if file_size < 8:
        raise ModelFileError(f"{not_ours} (only {file_size} bytes; a safetensors file starts with an 8-byte header)")
    header_length = int.from_bytes(data[:8], "little")
    if header_length > _MAX_HEADER_BYTES or 8 + header_length > file_size:
        raise ModelFileError(f"{not_ours} (not a safetensors file, or truncated: header of {header_length} bytes "
                             f"in a file of {file_size})")
    try:
        header = json.loads(data[8:8 + header_length])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelFileError(f"{not_ours} (not a safetensors file: unreadable header)") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{not_ours} (not a safetensors file: unreadable header)")
    header_metadata = header.get("__metadata__")
    stored = header_metadata.get(METADATA_KEY) if isinstance(header_metadata, dict) else None
    if stored is None:
        raise ModelFileError(f"{not_ours} (a safetensors file without quads metadata)")
    try:
        document = json.loads(stored)
    except (TypeError, json.JSONDecodeError):
        raise ModelFileError(f"{path}: damaged model file (its quads metadata is not valid JSON)") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, dict) else None
        raise ModelFileError(f"{not_ours} (format {found!r}, expected {FORMAT!r})")
    version = document.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{path}: damaged model file (format_version {version!r})")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path}: this file was written by a newer quads (format {version}, written by quads "
                             f"{document.get('quads_version', '?')}); this quads {__version__} reads format "
                             f"{FORMAT_VERSION}: upgrade quads")
    for key in ("tensors", "metadata", "sha256", "codebook_dtype"):
        if key not in document:
            raise ModelFileError(f"{path}: damaged model file (metadata lacks {key!r})")
    if not isinstance(document["tensors"], dict):
        raise ModelFileError(f"{path}: damaged model file (tensor table is not a mapping)")
    return document


def read_packed_header(path: str | Path) -> dict:
    """The whole quads document of a packed file (format, versions, per-tensor info, user metadata, digest),
    read from the header alone; the payload is not checked."""
    path = Path(path)
    data = _read_bytes(path, limit=8)
    file_size = path.stat().st_size
    if len(data) == 8:
        header_length = int.from_bytes(data, "little")
        if header_length <= _MAX_HEADER_BYTES:
            data = _read_bytes(path, limit=8 + header_length)
    return _parse_header(path, data, file_size)


def read_packed_metadata(path: str | Path) -> dict:
    """The user metadata stored by `save_packed` (architecture, front-end, labels), from the header alone."""
    return read_packed_header(path)["metadata"]


def _tensor_info(path: Path, name: str, info: object) -> tuple[int, tuple[int, ...]]:
    try:
        assert isinstance(info, dict)
        bits, shape = info["bits"], tuple(int(d) for d in info["shape"])
        validate_bits(bits)
        return bits, shape
    except (AssertionError, KeyError, TypeError, ValueError, QuadsError):
        raise ModelFileError(f"{path}: damaged model file (bad entry for tensor {name!r})") from None


def load_packed(path: str | Path, check_table: Callable[[dict[str, tuple[int, ...]]], None] | None = None
                ) -> tuple[dict[str, Tensor], dict]:
    """Read a packed model file: (state_dict with float32 dequantized weights, user metadata).

    Checks the format, version, presence and sizes of every tensor and the SHA-256 digest before use;
    `check_table(name -> shape)` may refuse the stored tensors before any is decoded (`quads.file_checks`).
    """
    path = Path(path)
    data = _read_bytes(path)
    document = _parse_header(path, data, len(data))
    if check_table is not None:
        check_table({name: _tensor_info(path, name, info)[1] for name, info in document["tensors"].items()})
    try:
        tensors = safetensors.torch.load(data)
    except Exception as error:  # safetensors reports a damaged file with its own error types
        raise ModelFileError(f"{path}: damaged or truncated model file ({error})") from None

    state: dict[str, Tensor] = {}
    for name, info in document["tensors"].items():
        bits, shape = _tensor_info(path, name, info)
        numel = math.prod(shape)
        keys = (name + INDEX_SUFFIX, name + CODEBOOK_SUFFIX) if has_codebook(bits) else (name,)
        missing = [key for key in keys if key not in tensors]
        if missing:
            raise ModelFileError(f"{path}: damaged model file (tensor {missing[0]!r} is missing)")
        if has_codebook(bits):
            packed, centroids = tensors[keys[0]], tensors[keys[1]]
            if packed.dtype != torch.uint8 or packed.numel() != packed_size(numel, bits) \
                    or centroids.numel() != 2**bits or not centroids.is_floating_point():
                raise ModelFileError(f"{path}: damaged model file (sizes of {name!r} do not match its {bits}-bit "
                                     f"shape {list(shape)})")
        elif tensors[name].numel() != numel:
            raise ModelFileError(f"{path}: damaged model file ({name!r} has {tensors[name].numel()} values, "
                                 f"expected {numel})")

    expected = document.pop("sha256")
    if _digest(document, tensors) != expected:
        raise ModelFileError(f"{path}: the model file was modified or corrupted after it was written "
                             "(SHA-256 mismatch)")

    for name, info in document["tensors"].items():
        bits, shape = _tensor_info(path, name, info)
        if has_codebook(bits):
            indices = unpack_indices(tensors[name + INDEX_SUFFIX], bits, math.prod(shape))
            centroids = tensors[name + CODEBOOK_SUFFIX].float()
            state[name] = centroids[indices.long()].reshape(shape)
        else:
            tensor = tensors[name].reshape(shape)
            state[name] = tensor.float() if tensor.is_floating_point() else tensor
    return state, document["metadata"]
