"""Reading a packed model file (`quads.compression.packed` describes the layout and writes it).

Reads safetensors only (no pickle, nothing from the file is executed) and reports every problem with the file
as a ModelFileError: the header and its format checks, the tensor table, the blobs of either format version,
the digest. `read_packed` stops after the checks and returns the stored forms; `load_packed` the float state.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import safetensors.torch
import torch
from torch import Tensor

from quads import __version__
from quads.compression.codebook import (
    FP16_BITS,
    QuantizedTensor,
    has_codebook,
    packed_size,
    unpack_indices,
    validate_bits,
)
from quads.compression.packed import (
    CODEBOOK_BLOB,
    CODEBOOK_DTYPES,
    CODEBOOK_SUFFIX,
    FORMAT,
    INDEX_BLOB,
    INDEX_SUFFIX,
    MAX_HEADER_BYTES,
    METADATA_KEY,
    READABLE_VERSIONS,
    ModelFileError,
    PackedContents,
    TensorEntry,
    content_digest,
    dtype_name,
)
from quads.errors import QuadsError

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
    if header_length > MAX_HEADER_BYTES or 8 + header_length > file_size:
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
        if header_length <= MAX_HEADER_BYTES:
            data = _read_bytes(path, limit=8 + header_length)
    return _parse_header(path, data, file_size)


def read_packed_metadata(path: str | Path) -> dict:
    """The user metadata stored by `save_packed` (architecture, front-end, labels), from the header alone."""
    return read_packed_header(path)["metadata"]


def tensor_entries(document: dict, path: str | Path = "model file") -> list[TensorEntry]:
    """The tensor table of a document from `read_packed_header`, in stored order, for either format version."""
    version = document["format_version"]
    rows = document["tensors"].items() if version == 1 else enumerate(document["tensors"])
    entries = []
    for key, row in rows:
        group_len = 0
        try:
            if version == 1:
                assert isinstance(row, dict)
                name, bits, shape, dtype = key, row["bits"], row["shape"], row.get("dtype", "float32")
            else:
                assert isinstance(row, list) and len(row) in (3, 4)
                name, bits, shape = row[:3]
                dtype = row[3] if len(row) == 4 else "float32"
                if len(row) == 4 and has_codebook(bits):  # version 3: the weights per codebook group
                    assert version >= 3 and isinstance(dtype, int) and not isinstance(dtype, bool) and dtype > 0
                    group_len, dtype = dtype, "float32"
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
        entries.append(TensorEntry(name, bits, tuple(shape), dtype, group_len))
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
    """Versions 2 and 3: each tensor takes the next slice of its blobs, in table order."""
    needed: dict[str, tuple[str, int]] = {}  # blob -> (its dtype, values the table asks of it)

    def need(blob: str, dtype: str, count: int) -> None:
        needed[blob] = (dtype, needed.get(blob, (dtype, 0))[1] + count)

    for entry in entries:
        if has_codebook(entry.bits):
            need(INDEX_BLOB, "uint8", packed_size(entry.numel, entry.bits))
            need(CODEBOOK_BLOB, entry.dtype, entry.codebook_values)
        else:
            need(entry.dtype, entry.dtype, entry.numel)
    for blob, (dtype, count) in needed.items():
        if blob not in tensors:
            raise ModelFileError(f"{path}: damaged model file (blob {blob!r} is missing)")
        stored = tensors[blob]
        if stored.dim() != 1 or stored.numel() != count or dtype_name(stored.dtype) != dtype:
            raise ModelFileError(f"{path}: damaged model file (blob {blob!r} holds {stored.numel()} "
                                 f"{dtype_name(stored.dtype)} values, its tensor table needs {count} {dtype})")
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
            centroids = take(CODEBOOK_BLOB, entry.codebook_values).float()
            quantized[entry.name] = QuantizedTensor(entry.bits, entry.shape, centroids=centroids,
                                                    indices=unpack_indices(packed, entry.bits, entry.numel),
                                                    group_len=entry.group_len)
        elif entry.bits == FP16_BITS:
            quantized[entry.name] = QuantizedTensor(entry.bits, entry.shape, values=take("float16", entry.numel))
        else:
            float_state[entry.name] = take(entry.dtype, entry.numel).reshape(entry.shape)
    return quantized, float_state


TableCheck = Callable[[dict[str, tuple[int, ...]]], None]


def read_packed(path: str | Path, check_table: TableCheck | None = None) -> PackedContents:
    """Read and check a packed model file (format, version, tensor table against the stored sizes, SHA-256);
    returns its tensors in stored form. Works on files of every version in READABLE_VERSIONS.

    `check_table(name -> shape)` may refuse the stored tensors before any is decoded
    (`quads.compression.file_checks`)."""
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
    if content_digest(document, tensors) != expected:
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
