"""Examples that live on disk in a few large shards and are read one batch at a time: memory that does not grow
with the corpus.

A store is a folder written once and then only read:

    DIR/shard-00000.bin ...   raw little-endian arrays, each item time-major [T, width], items back to back
                              (np.memmap(path, dtype).reshape(-1, width) views a whole shard)
    DIR/index.npz             per item: shard number, first row in its shard, length T, label; the ids
    DIR/index.json            dtype, width, time_dim, each shard's byte size; written last, so a folder without
                              it is an unfinished store and is rebuilt, never read

Reads use `os.pread` into the batch's own buffer rather than a mapping: mapped pages count toward the process's
resident memory, and a file truncated under a mapping kills the process (SIGBUS), while a short read is an error
this module can handle. A shard that is missing or has the wrong size (truncated, deleted) is recomputed from
the store's `source` (the per-utterance caches) with a log line saying so. Shards are written to a temporary
file and renamed, so a full disk or a kill never leaves a half-written shard that a later run would trust.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from quads.atomic import atomic_path, atomic_write, atomic_write_text
from quads.errors import QuadsError
from quads.training.batches import Batch

logger = logging.getLogger(__name__)

STORE_FORMAT = 1
SHARD_BYTES = 1 << 30  # about 1 GiB per shard: SLURP's log-mels make ~7 shards, Whisper-large frames ~100
CHUNK_ITEMS = 64  # items asked of the source at a time while writing: the write-time memory bound

Source = Callable[[Sequence[int]], Sequence[np.ndarray | Tensor]]  # positions -> arrays in item layout


class StoreWriteError(QuadsError):
    """A shard could not be written (typically a full disk); nothing half-written is kept."""


def _as_time_major(array: np.ndarray | Tensor, time_dim: int, dtype: np.dtype) -> np.ndarray:
    array = array.numpy() if isinstance(array, Tensor) else np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"store items must be 2-D, got shape {array.shape}")
    return np.ascontiguousarray(array.T if time_dim == 1 else array, dtype=dtype)


class ShardedExamples:
    """Variable-length examples on disk, with the interface of `ExampleSet` (len, labels, lengths, time_dim,
    ids, items, collate, in_length_order) so the training loop and evaluation need not know where they live."""

    def __init__(self, directory: str | Path, source: Source | None = None):
        self.directory = Path(directory)
        self.source = source
        try:
            meta = json.loads((self.directory / "index.json").read_text(encoding="utf-8"))
            with np.load(self.directory / "index.npz", allow_pickle=False) as index:
                self.shard_of = index["shard"].astype(np.int64)
                self.row_of = index["row"].astype(np.int64)
                lengths, labels, ids = index["length"], index["label"], index["ids"]
        except (OSError, ValueError, KeyError) as error:
            raise QuadsError(f"{self.directory}: not a finished example store ({error})") from None
        if meta.get("format") != STORE_FORMAT:
            raise QuadsError(f"{self.directory}: example store format {meta.get('format')} is not {STORE_FORMAT}")
        self.dtype = np.dtype(meta["dtype"])
        self.width = int(meta["width"])
        self.time_dim = int(meta["time_dim"])
        self.shard_bytes: list[int] = [int(size) for size in meta["shard_bytes"]]
        self.lengths = torch.from_numpy(lengths.astype(np.int64))
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.ids = [str(item) for item in ids]
        self.items = _LazyItems(self)
        self._files: dict[int, int] = {}
        self._pid = os.getpid()
        for shard in range(len(self.shard_bytes)):
            self._check_shard(shard)

    def __len__(self) -> int:
        return len(self.lengths)

    def __repr__(self) -> str:
        return f"ShardedExamples({str(self.directory)!r}, {len(self)} items, {len(self.shard_bytes)} shards)"

    def __getstate__(self) -> dict:  # DataLoader workers open their own file descriptors
        return {**self.__dict__, "_files": {}}

    @property
    def disk_bytes(self) -> int:
        return sum(self.shard_bytes)

    def shard_path(self, shard: int) -> Path:
        return self.directory / f"shard-{shard:05d}.bin"

    def _check_shard(self, shard: int) -> None:
        """Recompute the shard when its file is missing or not the size the index says (truncated, deleted)."""
        path = self.shard_path(shard)
        try:
            size = path.stat().st_size
        except OSError:
            size = -1
        if size == self.shard_bytes[shard]:
            return
        what = "missing" if size < 0 else f"{size} bytes instead of {self.shard_bytes[shard]}"
        if self.source is None:
            raise QuadsError(f"{path} is damaged ({what}) and this store has no source to recompute it from; "
                             f"delete {self.directory} to rebuild the store")
        logger.warning("example shard %s is damaged (%s); recomputing its %d utterances", path, what,
                       int((self.shard_of == shard).sum()))
        self._close(shard)
        positions = np.flatnonzero(self.shard_of == shard).tolist()
        written = _write_shard(path, positions, self.source, self.time_dim, self.dtype, self.width)
        if written != self.shard_bytes[shard]:
            raise QuadsError(f"{path}: the recomputed shard has {written} bytes, the index says "
                             f"{self.shard_bytes[shard]}; the source changed since {self.directory} was written, "
                             "delete it to rebuild the store")

    def _close(self, shard: int) -> None:
        descriptor = self._files.pop(shard, None)
        if descriptor is not None:
            os.close(descriptor)

    def _descriptor(self, shard: int) -> int:
        if self._pid != os.getpid():  # a forked worker: never share file positions or closes with the parent
            self._files, self._pid = {}, os.getpid()
        if shard not in self._files:
            self._files[shard] = os.open(self.shard_path(shard), os.O_RDONLY)
        return self._files[shard]

    def read(self, position: int) -> np.ndarray:
        """One item, time-major [T, width], in the store's dtype."""
        shard = int(self.shard_of[position])
        row_bytes = self.width * self.dtype.itemsize
        size, offset = int(self.lengths[position]) * row_bytes, int(self.row_of[position]) * row_bytes
        for attempt in range(2):
            try:
                data = os.pread(self._descriptor(shard), size, offset)
            except OSError:
                data = b""
            if len(data) == size and self.shard_path(shard).exists():
                return np.frombuffer(data, dtype=self.dtype).reshape(-1, self.width)
            if attempt == 0:
                self._close(shard)
                self._check_shard(shard)
        raise QuadsError(f"{self.shard_path(shard)}: cannot read item {position} after recomputing the shard")

    def item(self, position: int) -> Tensor:
        """One item as a float32 tensor in the layout it was given ([C, T] when time_dim is 1, else [T, D])."""
        array = torch.from_numpy(self.read(position).astype(np.float32))
        return array.T.contiguous() if self.time_dim == 1 else array

    def collate(self, positions: Sequence[int] | Tensor) -> Batch:
        positions = torch.as_tensor(positions, dtype=torch.long)
        lengths = self.lengths[positions]
        max_len = int(max(int(lengths.max()), 1))
        inputs = np.zeros((len(positions), max_len, self.width), dtype=np.float32)
        for row, position in enumerate(positions.tolist()):
            inputs[row, : int(lengths[row])] = self.read(position)
        tensor = torch.from_numpy(inputs)
        if self.time_dim == 1:
            tensor = tensor.transpose(1, 2).contiguous()
        mask = torch.arange(max_len)[None, :] < lengths[:, None]
        return Batch(tensor, mask, self.labels[positions], positions)

    def in_length_order(self, batch_size: int) -> Iterator[Batch]:
        order = torch.argsort(self.lengths, stable=True)
        for start in range(0, len(order), batch_size):
            yield self.collate(order[start : start + batch_size])

    def close(self) -> None:
        for shard in list(self._files):
            self._close(shard)


class _LazyItems(Sequence):
    """`store.items[i]`: one item read from disk when asked for (the in-memory ExampleSet keeps a list)."""

    def __init__(self, store: ShardedExamples):
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, position):  # type: ignore[override]
        if isinstance(position, slice):
            return [self.store.item(i) for i in range(*position.indices(len(self)))]
        return self.store.item(int(position))


def _write_shard(path: Path, positions: Sequence[int], source: Source, time_dim: int, dtype: np.dtype,
                 width: int) -> int:
    """Rewrite one shard from `source` (temp file + rename); returns the bytes written."""
    written = 0
    try:
        with atomic_path(path, durable=False) as temp, open(temp, "wb") as out:
            for start in range(0, len(positions), CHUNK_ITEMS):
                chunk = positions[start : start + CHUNK_ITEMS]
                for array in source(chunk):
                    rows = _as_time_major(array, time_dim, dtype)
                    out.write(rows.tobytes())
                    written += rows.nbytes
    except OSError as error:
        _raise_if_full(error, path, written)
        raise
    return written


def _raise_if_full(error: OSError, path: Path, needed: int) -> None:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
        raise StoreWriteError(f"no space left in {path.parent} while writing {path.name}: about {needed:,} bytes "
                              f"are needed there and {free:,} are free; free space or point data.cache_dir "
                              "elsewhere. Nothing half-written was kept") from None


def build_store(directory: str | Path, count: int, source: Source, labels: Sequence[int] | Tensor,
                ids: Sequence[str], *, time_dim: int, dtype: str = "float32",
                shard_bytes: int = SHARD_BYTES) -> ShardedExamples:
    """Write `count` items (asked of `source` CHUNK_ITEMS at a time, in order) into shards of about
    `shard_bytes`, then the index; returns the store, opened with `source` to recompute a damaged shard."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "index.json").unlink(missing_ok=True)  # unfinished until the index is written again
    store_dtype = np.dtype(dtype)
    shard_of = np.zeros(count, dtype=np.int32)
    row_of = np.zeros(count, dtype=np.int64)
    lengths = np.zeros(count, dtype=np.int64)
    width = 0
    shard_sizes: list[int] = []
    shard = contextlib.ExitStack()
    out = None
    in_shard = rows_in_shard = total = 0
    path = directory / "shard-00000.bin"
    try:
        for start in range(0, count, CHUNK_ITEMS):
            chunk = range(start, min(start + CHUNK_ITEMS, count))
            for position, array in zip(chunk, source(chunk), strict=True):
                rows = _as_time_major(array, time_dim, store_dtype)
                width = width or rows.shape[1]
                if rows.shape[1] != width:
                    raise QuadsError(f"{directory}: item {position} has width {rows.shape[1]}, the others {width}")
                if out is None:
                    path = directory / f"shard-{len(shard_sizes):05d}.bin"
                    temp = shard.enter_context(atomic_path(path, durable=False))
                    out = shard.enter_context(open(temp, "wb"))  # noqa: SIM115 (the stack closes it)
                out.write(rows.tobytes())
                shard_of[position], row_of[position], lengths[position] = len(shard_sizes), rows_in_shard, len(rows)
                rows_in_shard += len(rows)
                in_shard += rows.nbytes
                total += rows.nbytes
                if in_shard >= shard_bytes or position == count - 1:
                    shard.close()  # closes the file and renames it into place
                    shard_sizes.append(in_shard)
                    out, in_shard, rows_in_shard = None, 0, 0
    except BaseException as error:
        shard.__exit__(type(error), error, error.__traceback__)  # removes the temporary shard
        if isinstance(error, OSError):
            done = max(int(np.count_nonzero(lengths)), 1)
            _raise_if_full(error, path, int(total / done * count) - sum(shard_sizes))
        raise
    _write_index(directory, shard_of, row_of, lengths, labels, ids, time_dim, store_dtype, width, shard_sizes)
    return ShardedExamples(directory, source)


def _write_index(directory: Path, shard_of: np.ndarray, row_of: np.ndarray, lengths: np.ndarray,
                 labels: Sequence[int] | Tensor, ids: Sequence[str], time_dim: int, dtype: np.dtype, width: int,
                 shard_sizes: list[int]) -> None:
    labels_array = np.asarray(torch.as_tensor(labels, dtype=torch.long).numpy(), dtype=np.int64)
    ids_array = np.asarray([str(i) for i in ids] or [str(i) for i in range(len(lengths))])
    atomic_write(directory / "index.npz", lambda file: np.savez(file, shard=shard_of, row=row_of, length=lengths,
                                                                label=labels_array, ids=ids_array), durable=False)
    meta = {"format": STORE_FORMAT, "dtype": dtype.name, "width": width, "time_dim": time_dim,
            "count": len(lengths), "shard_bytes": shard_sizes}
    atomic_write_text(directory / "index.json", json.dumps(meta, indent=1) + "\n", durable=False)


def open_or_build(directory: str | Path, count: int, source: Source, labels: Sequence[int] | Tensor,
                  ids: Sequence[str], *, time_dim: int, dtype: str = "float32",
                  shard_bytes: int = SHARD_BYTES) -> ShardedExamples:
    """The finished store in `directory` (its damaged shards recomputed), or a new one written from `source`."""
    directory = Path(directory)
    if (directory / "index.json").exists():
        try:
            store = ShardedExamples(directory, source)
        except QuadsError as error:
            logger.warning("rebuilding the example store %s: %s", directory, error)
        else:
            if len(store) == count:
                return store
    return build_store(directory, count, source, labels, ids, time_dim=time_dim, dtype=dtype,
                       shard_bytes=shard_bytes)


class StoreRows:
    """Columns [start, stop) of a store of one-row items, read by position and optionally z-scored: the
    teacher's pooled embeddings or logits as a tensor-like [N, D] that is never whole in memory."""

    def __init__(self, store: ShardedExamples, start: int, stop: int, mean: Tensor | None = None,
                 std: Tensor | None = None):
        self.store, self.start, self.stop, self.mean, self.std = store, start, stop, mean, std

    def __len__(self) -> int:
        return len(self.store)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.store), self.stop - self.start)

    def __getitem__(self, positions: Tensor | Sequence[int]) -> Tensor:
        positions = torch.as_tensor(positions, dtype=torch.long).reshape(-1)
        rows = np.stack([self.store.read(p)[0, self.start : self.stop] for p in positions.tolist()])
        values = torch.from_numpy(rows.astype(np.float32))
        if self.mean is not None and self.std is not None:
            values = (values - self.mean) / self.std
        return values


class StandardizedItems(Sequence):
    """`items[i]` z-scored with fixed per-dimension statistics and stored as float16 on the fly: the
    frame-level teacher targets, computed per batch instead of held for the whole corpus."""

    def __init__(self, items: Sequence[Tensor], mean: Tensor, std: Tensor):
        self.items, self.mean, self.std = items, mean, std

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position):  # type: ignore[override]
        if isinstance(position, slice):
            return [self[i] for i in range(*position.indices(len(self)))]
        return ((self.items[position] - self.mean) / self.std).half()


def alias_store(base: ShardedExamples, directory: str | Path, positions: Sequence[int]) -> ShardedExamples:
    """A store whose item i is `base` item positions[i], sharing base's shard files (symbolic links): how a
    benchmark scales a corpus by replication without writing its bytes again."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for shard in range(len(base.shard_bytes)):
        link = directory / base.shard_path(shard).name
        link.unlink(missing_ok=True)
        link.symlink_to(base.shard_path(shard).resolve())
    chosen = np.asarray(positions, dtype=np.int64)
    _write_index(directory, base.shard_of[chosen].astype(np.int32), base.row_of[chosen],
                 base.lengths.numpy()[chosen], base.labels[torch.from_numpy(chosen)], [base.ids[i] for i in chosen],
                 base.time_dim, base.dtype, base.width, base.shard_bytes)
    return ShardedExamples(directory)
