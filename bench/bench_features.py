"""Throughput of `compute_features`: cold (decode + log-mel + write) versus warm (read from the feature cache).

    .venv/bin/python bench/bench_features.py [--count 300] [--batch-size 32] [--n-mels 80]

Generates `count` 16 kHz mono WAVs of 1-4 s (tones in noise, the length of spoken commands) in a temporary folder,
so it needs no corpus. The warm pass uses a fresh FeatureCache object, so it pays the on-disk index lookups a new
process would pay.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

from quads.audio import SAMPLE_RATE, FrontEndConfig
from quads.data import Utterance
from quads.features import FeatureCache, compute_features


def generate_clips(folder: Path, count: int, seed: int = 0) -> list[Utterance]:
    rng = np.random.default_rng(seed)
    utterances = []
    for index in range(count):
        seconds = rng.uniform(1.0, 4.0)
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        audio = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 3000) * t) + 0.05 * rng.standard_normal(t.size)
        path = folder / f"clip{index:04d}.wav"
        soundfile.write(path, audio.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
        utterances.append(Utterance(path.stem, path, "noise", "bench"))
    return utterances


def timed(utterances: list[Utterance], config: FrontEndConfig, cache: FeatureCache, batch_size: int) -> float:
    started = time.perf_counter()
    compute_features(utterances, config, cache, batch_size=batch_size, progress=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--n-mels", type=int, default=80, choices=(80, 128))
    parser.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    args = parser.parse_args()
    config = FrontEndConfig(n_mels=args.n_mels)

    with tempfile.TemporaryDirectory() as scratch:
        audio_dir, cache_dir = Path(scratch) / "audio", Path(scratch) / "cache"
        audio_dir.mkdir()
        utterances = generate_clips(audio_dir, args.count)
        hours = sum(soundfile.info(str(u.path)).duration for u in utterances) / 3600

        cold_cache = FeatureCache(cache_dir, dtype=args.dtype)
        cold = timed(utterances, config, cold_cache, args.batch_size)
        warm_cache = FeatureCache(cache_dir, dtype=args.dtype)
        warm = timed(utterances, config, warm_cache, args.batch_size)
        assert warm_cache.hits == len(utterances), warm_cache
        size = sum(path.stat().st_size for path in cache_dir.rglob("*.npz"))

    print(
        f"{args.count} clips, {hours * 60:.1f} min of audio, n_mels {args.n_mels}, batch {args.batch_size}, "
        f"{args.dtype} storage, torch threads {torch.get_num_threads()}"
    )
    print(f"cold (decode + log-mel + store): {args.count / cold:8.1f} utt/s  ({cold:.2f} s)")
    print(f"warm (from the cache):           {args.count / warm:8.1f} utt/s  ({warm:.2f} s)")
    print(f"warm / cold speed-up: {cold / warm:.1f}x; cache size {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
