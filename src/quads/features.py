"""Log-mel features computed once per (audio content, front-end config) and reused across epochs, runs and processes.

Layout of a cache directory (safe to share between processes, e.g. DDP ranks, and to delete at any time):

    v1/features/ab/<key>.npz   one utterance: {"features": [n_mels, T]} in float16 by default
    v1/files/cd/<fast key>     the sha256 of an audio file's bytes, indexed by (path, size, mtime_ns)

key = sha256 of the audio's content hash, the FrontEndConfig, the storage dtype and FEATURE_FORMAT, so renaming or
copying a file keeps its features and changing any front-end number recomputes them. The fast-key index spares
re-reading every file to hash it on warm runs. Entries are written to a temporary file in the same folder and
moved into place with os.replace, so readers see a whole entry or none; the zip CRC of .npz detects an entry that
was damaged later, which is then recomputed.

Why float16: the normalised log-mel values lie in about [-1, 2], where float16 rounds by at most 1e-3 — far below
any difference a model can learn from — and it halves the disk and read cost (FSC: ~1.1 GB instead of ~2.2 GB).
`compute_features` returns the stored (rounded) values on a cold run too, so cold and warm runs give identical
tensors.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
import torch
from tqdm import tqdm

from quads.atomic import atomic_write, atomic_write_bytes
from quads.audio import (
    FrontEndConfig,
    LogMelSpectrogram,
    audio_duration,
    check_min_samples,
    load_audio,
    pad_batch,
)
from quads.cache_dir import cache_root
from quads.data import SPLITS, Utterance, open_corpus
from quads.errors import AudioError, ConfigError

FEATURE_FORMAT = 1  # bump when the front-end's output changes for the same config
STORAGE_DTYPES = ("float16", "float32")
HASH_CHUNK = 1 << 20

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """$QUADS_CACHE_DIR/features, else ~/.cache/quads/features (QUADS_CACHE_DIR is the root of all quads caches)."""
    return cache_root() / "features"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class FeatureCache:
    """A content-keyed store of per-utterance feature arrays; counts hits, misses and damaged entries."""

    def __init__(self, directory: str | Path, dtype: str = "float16") -> None:
        if dtype not in STORAGE_DTYPES:
            raise ConfigError(f"feature cache dtype {dtype!r} is not one of {STORAGE_DTYPES}")
        self.directory = Path(directory).expanduser()
        self.dtype = np.dtype(dtype)
        self.hits = 0
        self.misses = 0
        self.corrupt = 0
        self._content_hashes: dict[tuple[str, int, int], str] = {}

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.directory)!r}, {self.dtype.name}, hits={self.hits}, misses={self.misses})"

    @property
    def _root(self) -> Path:
        return self.directory / f"v{FEATURE_FORMAT}"

    def content_hash(self, path: str | Path) -> str:
        """sha256 of the file's bytes, looked up by (path, size, mtime_ns) so unchanged files are not re-read."""
        path = Path(path).resolve()
        try:
            stat = path.stat()
        except OSError as error:
            raise AudioError(f"{path}: audio file not found ({error.strerror or error})") from None
        fast = (str(path), stat.st_size, stat.st_mtime_ns)
        if fast in self._content_hashes:
            return self._content_hashes[fast]
        fast_key = hashlib.sha256("\0".join(map(str, fast)).encode()).hexdigest()
        index_path = self._root / "files" / fast_key[:2] / fast_key
        try:
            content = index_path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            content = ""
        if len(content) != 64 or any(c not in "0123456789abcdef" for c in content):
            try:
                content = file_sha256(path)
            except OSError as error:
                raise AudioError(f"{path}: cannot read audio file ({error.strerror or error})") from None
            atomic_write_bytes(index_path, content.encode("ascii"), durable=False)
        self._content_hashes[fast] = content
        return content

    def key(self, path: str | Path, config: FrontEndConfig) -> str:
        identity = {
            "audio": self.content_hash(path),
            "frontend": json.loads(config.to_json()),
            "dtype": self.dtype.name,
            "format": FEATURE_FORMAT,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def entry_path(self, key: str) -> Path:
        return self._root / "features" / key[:2] / f"{key}.npz"

    def get(self, key: str, n_mels: int) -> np.ndarray | None:
        """The stored [n_mels, T] array, or None when absent or damaged (a damaged entry is removed)."""
        path = self.entry_path(key)
        try:
            with np.load(path, allow_pickle=False) as archive:
                features = archive["features"]
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            return self._discard(path, f"unreadable ({error})")
        if features.dtype != self.dtype or features.ndim != 2 or features.shape[0] != n_mels:
            return self._discard(path, f"unexpected array {features.dtype} {features.shape}")
        if not np.isfinite(features).all():
            return self._discard(path, "non-finite values")
        self.hits += 1
        return features

    def _discard(self, path: Path, reason: str) -> None:
        logger.warning("feature cache entry %s is damaged (%s); recomputing it", path, reason)
        path.unlink(missing_ok=True)
        self.corrupt += 1
        self.misses += 1
        return None

    def put(self, key: str, features: np.ndarray) -> np.ndarray:
        """Store [n_mels, T] features; returns them as stored (cast to the cache dtype)."""
        stored = np.ascontiguousarray(features, dtype=self.dtype)
        atomic_write(self.entry_path(key), lambda stream: np.savez(stream, features=stored), durable=False)
        return stored


def compute_features(
    utterances: Sequence[Utterance],
    frontend_config: FrontEndConfig,
    cache: FeatureCache | None,
    batch_size: int = 32,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> list[torch.Tensor]:
    """Float32 [n_mels, T] features per utterance, in input order; cached entries are read, the rest computed in
    batches of similar length (sorted by duration, so little compute is spent on padding) and stored."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    started = time.perf_counter()
    results: list[torch.Tensor | None] = [None] * len(utterances)
    keys: list[str | None] = [None] * len(utterances)
    bar = tqdm(total=len(utterances), desc="features", unit="utt", delay=1.0, disable=not progress, leave=False)
    with bar:
        pending = []
        for index, utterance in enumerate(utterances):
            if cache is not None:
                keys[index] = cache.key(utterance.path, frontend_config)
                stored = cache.get(keys[index], frontend_config.n_mels)
                if stored is not None:
                    results[index] = torch.from_numpy(stored.astype(np.float32))
                    bar.update()
                    continue
            pending.append(index)
        pending.sort(key=lambda index: audio_duration(utterances[index].path), reverse=True)
        frontend = LogMelSpectrogram(frontend_config).to(device)
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            waveforms = [load_audio(utterances[index].path, frontend_config.sample_rate) for index in batch]
            for index, waveform in zip(batch, waveforms, strict=True):
                check_min_samples(waveform, utterances[index].path, frontend_config.hop_length,
                                  frontend_config.sample_rate)
            padded, lengths = pad_batch(waveforms)
            with torch.inference_mode():
                features, mask = frontend(padded.to(device), lengths.to(device))
            frames = mask.sum(dim=1).tolist()
            for row, index in enumerate(batch):
                array = features[row, :, : frames[row]].cpu().numpy()
                key = keys[index]
                array = cache.put(key, array) if cache is not None and key is not None else array.copy()
                results[index] = torch.from_numpy(array.astype(np.float32, copy=False))
            bar.update(len(batch))
    hits = len(utterances) - len(pending)
    logger.info(
        "features for %d utterances: %d from cache, %d computed in %.1f s",
        len(utterances),
        hits,
        len(pending),
        time.perf_counter() - started,
    )
    return cast(list[torch.Tensor], results)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", type=Path, help="corpus folder (FSC or SLURP layout) or a manifest .csv")
    parser.add_argument("--n-mels", type=int, default=80, choices=(80, 128), help="mel bins (Whisper large-v3: 128)")
    parser.add_argument("--cache", type=Path, default=None, help=f"cache folder (default: {default_cache_dir()})")
    parser.add_argument("--batch-size", type=int, default=32, help="utterances per front-end batch")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS, help="which splits")
    parser.add_argument("--skip-missing", action="store_true", help="skip utterances whose audio file is missing")
    parser.add_argument("--drop-unknown-labels", action="store_true",
                        help="drop valid/test utterances whose intent does not occur in train")
    parser.add_argument("--dtype", default="float16", choices=STORAGE_DTYPES, help="storage precision")
    parser.add_argument("--recordings", choices=("headset", "farfield", "both"), help="SLURP only (default headset)")


def run(args: argparse.Namespace) -> int:
    options = {"skip_missing": args.skip_missing, "drop_unknown_labels": args.drop_unknown_labels}
    if args.recordings:
        options["recordings"] = args.recordings
    corpus = open_corpus(args.data_dir, **options)
    utterances = [utterance for split in args.splits for utterance in corpus.splits[split]]
    config = FrontEndConfig(n_mels=args.n_mels)
    cache = FeatureCache(args.cache or default_cache_dir(), dtype=args.dtype)
    started = time.perf_counter()
    features = compute_features(utterances, config, cache, args.batch_size)
    seconds = time.perf_counter() - started
    hours = sum(tensor.shape[1] for tensor in features) * config.hop_length / config.sample_rate / 3600
    print(
        f"{corpus.name} {' + '.join(args.splits)}: {len(features)} utterances ({hours:.2f} h), "
        f"{cache.hits} from cache, {cache.misses} computed"
        + (f" ({cache.corrupt} damaged entries replaced)" if cache.corrupt else "")
        + f", {seconds:.1f} s -> {cache.directory}"
    )
    return 0
