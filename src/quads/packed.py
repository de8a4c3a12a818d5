"""The packed model file: one safetensors file whose size on disk is the model size we report.

Layout (format_version 2; files of version 1 still load):
- four blobs at most, whatever the number of tensors: `indices` (uint8: every codebook tensor's indices
  bit-packed by `quads.codebook.pack_indices`, little-endian bit stream, index i in bits [i*b, (i+1)*b), each
  tensor starting on a byte), `codebooks` (every codebook's 2^b centroids, float16 by default or float32),
  `float16` (the 16-bit tensors) and `float32` (the float remainder: biases, norms, tensors kept at 32 bits);
  an integer buffer goes to a blob named after its dtype (`int64`...);
- the header's `__metadata__` holds one JSON document under the key "quads": `format` ("quads-packed"),
  `format_version`, `quads_version`, `codebook_dtype`, `tensors` (the compact table: one `[name, bits, shape]`
  per tensor, plus the dtype for an integer buffer, in blob order: a tensor's place in its blobs is the sum of
  the sizes before it), the user's `metadata` (architecture, front-end, labels...), and `sha256`, a digest of
  that document and of every stored blob (name, dtype, shape, bytes), so any modification is detected.

One safetensors entry per tensor (version 1: `name.qidx`, `name.qcb`, `name`, and a dict per tensor in the
table) cost ~200 bytes of header per tensor: 19 % of a 2-bit conv-200k file. Now the header is the table and
the user metadata, and the file is within a few KB of `theoretical_bytes`.

Loading reads safetensors only (no pickle, nothing from the file is executed) and reports every problem with
the file as a ModelFileError. It decodes (header, blobs, table into per-tensor stored forms), checks the
digest, then builds the float state dict: `read_packed` stops after the checks and returns the stored forms
(what an ONNX export with codebooks needs).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch
from torch import Tensor

from quads import __version__
from quads.atomic import atomic_write_bytes
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
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
METADATA_KEY = "quads"
INDEX_BLOB = "indices"
CODEBOOK_BLOB = "codebooks"
INDEX_SUFFIX = ".qidx"  # version 1: one entry per tensor
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


@dataclass(frozen=True)
class TensorEntry:
    """One row of the tensor table: `dtype` is the stored one (float16 for 16 bits, the codebook's for 1-8 bits,
    float32 or an integer dtype for 32 bits)."""

    name: str
    bits: int
    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


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


def _dtype_name(dtype: torch.dtype) -> str:
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
        hasher.update(f"\0{key}\0{_dtype_name(tensor.dtype)}\0{list(tensor.shape)}\0".encode())
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

    for name, qt in quantized.items():
        validate_bits(qt.bits)
        params_by_bits[qt.bits] = params_by_bits.get(qt.bits, 0) + qt.numel
        table.append([name, qt.bits, list(qt.shape)])
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
        dtype = _dtype_name(stored.dtype)
        table.append([name, 32, list(stored.shape)] + ([] if dtype == "float32" else [dtype]))
        if dtype in (INDEX_BLOB, CODEBOOK_BLOB):
            raise ValueError(f"{name}: dtype {dtype!r} clashes with a blob name")
        parts.setdefault(dtype, []).append(stored.reshape(-1))
    tensors = {blob: torch.cat(pieces).contiguous() for blob, pieces in parts.items()}

    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "quads_version": __version__,
        "codebook_dtype": codebook_dtype,
        "tensors": table,
        "metadata": metadata,
    }
    try:
        json.dumps(document, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model file metadata must be JSON-serialisable: {error}") from None
    document["sha256"] = _digest(document, tensors)
    header = json.dumps(document, allow_nan=False, separators=(",", ":"))
    payload = safetensors.torch.save(tensors, metadata={METADATA_KEY: header})
    atomic_write_bytes(path, payload)
    header_bytes = 8 + int.from_bytes(payload[:8], "little")
    return PackedInfo(path=path, file_bytes=path.stat().st_size,
                      theoretical_bytes=theoretical_bytes(float_state, quantized, codebook_dtype),
                      header_bytes=header_bytes, params_by_bits=dict(sorted(params_by_bits.items())))


# ---------------------------------------------------------------------------------------------- reading the header


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
    if version not in READABLE_VERSIONS:
        readable = ", ".join(str(v) for v in READABLE_VERSIONS)
        raise ModelFileError(f"{path}: this file was written by a newer quads (format {version}, written by quads "
                             f"{document.get('quads_version', '?')}); this quads {__version__} reads formats "
                             f"{readable}: upgrade quads")
    for key in ("tensors", "metadata", "sha256", "codebook_dtype"):
        if key not in document:
            raise ModelFileError(f"{path}: damaged model file (metadata lacks {key!r})")
    table_type = dict if version == 1 else list
    if not isinstance(document["tensors"], table_type):
        raise ModelFileError(f"{path}: damaged model file (tensor table is not a {table_type.__name__})")
    if document["codebook_dtype"] not in CODEBOOK_DTYPES:
        raise ModelFileError(f"{path}: damaged model file (codebook_dtype {document['codebook_dtype']!r})")
    return document


def read_packed_header(path: str | Path) -> dict:
    """The whole quads document of a packed file (format, versions, tensor table, user metadata, digest), read
    from the header alone; the payload is not checked. `tensor_entries` reads its table of either version."""
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


def tensor_entries(document: dict, path: str | Path = "model file") -> list[TensorEntry]:
    """The tensor table of a document from `read_packed_header`, in stored order, for either format version."""
    version1 = document["format_version"] == 1
    rows = document["tensors"].items() if version1 else enumerate(document["tensors"])
    entries = []
    for key, row in rows:
        try:
            if version1:
                assert isinstance(row, dict)
                name, bits, shape, dtype = key, row["bits"], row["shape"], row.get("dtype", "float32")
            else:
                assert isinstance(row, list) and len(row) in (3, 4)
                name, bits, shape = row[:3]
                dtype = row[3] if len(row) == 4 else "float32"
            assert isinstance(name, str) and isinstance(shape, list) and isinstance(dtype, str)
            assert all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
            validate_bits(bits)
        except (AssertionError, KeyError, TypeError, ValueError, QuadsError):
            raise ModelFileError(f"{path}: damaged model file (bad entry for tensor {key!r})") from None
        if bits == FP16_BITS:
            dtype = "float16"
        elif has_codebook(bits):
            dtype = document["codebook_dtype"]
        elif not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ModelFileError(f"{path}: damaged model file (tensor {name!r} has dtype {dtype!r})")
        entries.append(TensorEntry(name, bits, tuple(shape), dtype))
    return entries


# ---------------------------------------------------------------------------------------------- loading


def _decode_version1(path: Path, entries: list[TensorEntry], tensors: dict[str, Tensor]
                     ) -> tuple[dict[str, QuantizedTensor], dict[str, Tensor]]:
    """Version 1: one safetensors entry per stored piece (`name.qidx` + `name.qcb`, or `name`)."""
    quantized: dict[str, QuantizedTensor] = {}
    float_state: dict[str, Tensor] = {}
    for entry in entries:
        name, bits, numel = entry.name, entry.bits, entry.numel
        keys = (name + INDEX_SUFFIX, name + CODEBOOK_SUFFIX) if has_codebook(bits) else (name,)
        missing = [key for key in keys if key not in tensors]
        if missing:
            raise ModelFileError(f"{path}: damaged model file (tensor {missing[0]!r} is missing)")
        if has_codebook(bits):
            packed, centroids = tensors[keys[0]], tensors[keys[1]]
            if packed.dtype != torch.uint8 or packed.numel() != packed_size(numel, bits) \
                    or centroids.numel() != 2**bits or not centroids.is_floating_point():
                raise ModelFileError(f"{path}: damaged model file (sizes of {name!r} do not match its {bits}-bit "
                                     f"shape {list(entry.shape)})")
            quantized[name] = QuantizedTensor(bits, entry.shape, indices=unpack_indices(packed, bits, numel),
                                              centroids=centroids.float())
            continue
        tensor = tensors[name]
        if tensor.numel() != numel:
            raise ModelFileError(f"{path}: damaged model file ({name!r} has {tensor.numel()} values, "
                                 f"expected {numel})")
        if bits == FP16_BITS:
            quantized[name] = QuantizedTensor(bits, entry.shape, values=tensor.to(torch.float16).reshape(-1))
        else:
            float_state[name] = tensor.reshape(entry.shape)
    return quantized, float_state


def _decode_version2(path: Path, entries: list[TensorEntry], tensors: dict[str, Tensor]
                     ) -> tuple[dict[str, QuantizedTensor], dict[str, Tensor]]:
    """Version 2: each tensor takes the next slice of its blobs, in table order."""
    needed: dict[str, tuple[str, int]] = {}  # blob -> (its dtype, values the table asks of it)

    def need(blob: str, dtype: str, count: int) -> None:
        needed[blob] = (dtype, needed.get(blob, (dtype, 0))[1] + count)

    for entry in entries:
        if has_codebook(entry.bits):
            need(INDEX_BLOB, "uint8", packed_size(entry.numel, entry.bits))
            need(CODEBOOK_BLOB, entry.dtype, 2**entry.bits)
        else:
            need(entry.dtype, entry.dtype, entry.numel)
    for blob, (dtype, count) in needed.items():
        if blob not in tensors:
            raise ModelFileError(f"{path}: damaged model file (blob {blob!r} is missing)")
        stored = tensors[blob]
        if stored.dim() != 1 or stored.numel() != count or _dtype_name(stored.dtype) != dtype:
            raise ModelFileError(f"{path}: damaged model file (blob {blob!r} holds {stored.numel()} "
                                 f"{_dtype_name(stored.dtype)} values, its tensor table needs {count} {dtype})")
    unexpected = sorted(set(tensors) - set(needed))
    if unexpected:
        raise ModelFileError(f"{path}: damaged model file (blob {unexpected[0]!r} is not in its tensor table)")

    offsets = dict.fromkeys(needed, 0)

    def take(blob: str, count: int) -> Tensor:
        start = offsets[blob]
        offsets[blob] = start + count
        return tensors[blob][start:start + count]

    quantized: dict[str, QuantizedTensor] = {}
    float_state: dict[str, Tensor] = {}
    for entry in entries:
        if entry.name in quantized or entry.name in float_state:
            raise ModelFileError(f"{path}: damaged model file (tensor {entry.name!r} is listed twice)")
        if has_codebook(entry.bits):
            packed = take(INDEX_BLOB, packed_size(entry.numel, entry.bits))
            centroids = take(CODEBOOK_BLOB, 2**entry.bits).float()
            quantized[entry.name] = QuantizedTensor(entry.bits, entry.shape, centroids=centroids,
                                                    indices=unpack_indices(packed, entry.bits, entry.numel))
        elif entry.bits == FP16_BITS:
            quantized[entry.name] = QuantizedTensor(entry.bits, entry.shape, values=take("float16", entry.numel))
        else:
            float_state[entry.name] = take(entry.dtype, entry.numel).reshape(entry.shape)
    return quantized, float_state


TableCheck = Callable[[dict[str, tuple[int, ...]]], None]


def read_packed(path: str | Path, check_table: TableCheck | None = None) -> PackedContents:
    """Read and check a packed model file (format, version, tensor table against the stored sizes, SHA-256);
    returns its tensors in stored form. Works on files of every version in READABLE_VERSIONS.

    `check_table(name -> shape)` may refuse the stored tensors before any is decoded (`quads.file_checks`)."""
    path = Path(path)
    data = _read_bytes(path)
    document = _parse_header(path, data, len(data))
    try:
        tensors = safetensors.torch.load(data)
    except Exception as error:  # safetensors reports a damaged file with its own error types
        raise ModelFileError(f"{path}: damaged or truncated model file ({error})") from None

    entries = tensor_entries(document, path)
    if check_table is not None:
        check_table({entry.name: entry.shape for entry in entries})
    decode = _decode_version1 if document["format_version"] == 1 else _decode_version2
    quantized, float_state = decode(path, entries, tensors)

    expected = document.pop("sha256")
    if _digest(document, tensors) != expected:
        raise ModelFileError(f"{path}: the model file was modified or corrupted after it was written "
                             "(SHA-256 mismatch)")
    document["sha256"] = expected
    # decoded and authentic; checks of the metadata's fields and of the tensors' values slot in here, before
    # anything is built from them
    return PackedContents(document, quantized, float_state)


def load_packed(path: str | Path, check_table: TableCheck | None = None) -> tuple[dict[str, Tensor], dict]:
    """Read a packed model file: (state_dict with float32 dequantized weights, user metadata).

    Checks the format, version, presence and sizes of every tensor and the SHA-256 digest before use;
    `check_table` as in `read_packed`.
    """
    contents = read_packed(path, check_table)
    return contents.state_dict(), contents.metadata
