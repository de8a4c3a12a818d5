"""What a packed model file costs to run (docs/METHOD.md, "Efficiency figures"), apart from what it scores.

- bytes: on disk, and the theoretical size (the payload: bit-packed indices + codebooks + float16 tensors +
  float remainder; the difference is the header), from the header alone;
- GMACs for one utterance at its real length, counted exactly once per distinct frame count and per
  architecture (conv layers grow linearly with length, attention quadratically, so a single "typical length"
  figure would be wrong for transformers), and at Whisper's 30 s padding, which is how the paper counted;
- CPU latency of one utterance (batch size 1, waveform in memory -> log-mel front-end -> classifier), median
  and 90th percentile after a warm-up.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from quads.compression.codebook import FLOAT_BITS, FP16_BITS, QuantizedTensor, has_codebook
from quads.compression.packed import theoretical_bytes
from quads.compression.packed_reader import read_packed_header, tensor_entries
from quads.models.macs import gmacs_at_length

WHISPER_SECONDS = 30  # the paper's GMACs are counted on Whisper's 30 s padded input
LATENCY_WARMUP_RUNS = 3


def theoretical_file_bytes(path: str | Path) -> int:
    """The payload a packed file must hold, from its header alone, by `quads.compression.packed.theoretical_bytes`."""
    document = read_packed_header(path)
    float_state: dict[str, torch.Tensor] = {}
    quantized: dict[str, QuantizedTensor] = {}
    for entry in tensor_entries(document, path):
        if entry.bits == FLOAT_BITS:  # shape-only tensors: nothing is allocated
            float_state[entry.name] = torch.empty(entry.shape, dtype=getattr(torch, entry.dtype), device="meta")
        elif entry.bits == FP16_BITS:
            quantized[entry.name] = QuantizedTensor(entry.bits, entry.shape,
                                                    values=torch.empty(entry.numel, device="meta"))
        elif has_codebook(entry.bits):
            quantized[entry.name] = QuantizedTensor(entry.bits, entry.shape,
                                                    indices=torch.empty(entry.numel, device="meta"),
                                                    centroids=torch.empty(entry.codebook_values, device="meta"),
                                                    group_len=entry.group_len)
    return theoretical_bytes(float_state, quantized, document["codebook_dtype"])


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Counting MACs runs real forwards whose timing does not matter; one thread avoids the OpenMP contention
    that made them ~50x slower on a loaded 2-core machine (0.7 s instead of 10 ms for conv-200k)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def mean_gmacs(classifier: torch.nn.Module, n_mels: int, frame_counts: Sequence[int],
               progress: bool = False) -> float:
    """Mean GMACs per utterance at each utterance's real length: exact, counted once per distinct frame count."""
    distinct = sorted(set(frame_counts))
    with single_threaded():
        counted = {frames: gmacs_for_architecture(classifier, n_mels, frames)
                   for frames in tqdm(distinct, desc="GMACs", unit="length", disable=not progress, leave=False)}
    return float(np.mean([counted[frames] for frames in frame_counts]))


_GMACS_BY_ARCHITECTURE: dict[tuple[str, int, int], float] = {}


def gmacs_for_architecture(classifier: torch.nn.Module, n_mels: int, frames: int) -> float:
    """gmacs_at_length, remembered per (architecture, length): MACs do not depend on the weights, so the many
    bit widths of one student (quads demo, ablate) are counted once."""
    config = getattr(classifier, "config_dict", None)
    if config is None:
        return gmacs_at_length(classifier, n_mels, frames)
    key = (json.dumps(config(), sort_keys=True), n_mels, frames)
    if key not in _GMACS_BY_ARCHITECTURE:
        _GMACS_BY_ARCHITECTURE[key] = gmacs_at_length(architecture_for_length(classifier, frames), n_mels, frames)
    return _GMACS_BY_ARCHITECTURE[key]


def architecture_for_length(classifier: torch.nn.Module, frames: int) -> torch.nn.Module:
    """The classifier, or for a Whisper student whose position table is shorter than `frames` (a commands
    model keeps 10 s), the same architecture with a table long enough: the MACs of the layers do not depend
    on the table's length, so this is how the 30 s figure of a 10 s model is counted."""
    from quads.models.registry import build_classifier

    config = classifier.config_dict()
    encoder = config["encoder"]
    if encoder.get("type") != "whisper" or frames <= 2 * encoder["max_source_positions"]:
        return classifier
    return build_classifier({**config, "encoder": {**encoder, "max_source_positions": (frames + 1) // 2}})


@torch.inference_mode()
def measure_latency(model: torch.nn.Module, waveforms: Sequence[np.ndarray], progress: bool = False
                    ) -> tuple[float, float]:
    """Median and 90th-percentile milliseconds for one utterance: front-end (+ the scored window of a packed
    model) + classifier, batch size 1."""
    if not waveforms:
        raise ValueError("latency needs at least one waveform")

    def one(waveform: np.ndarray) -> None:
        samples = torch.from_numpy(waveform)[None]
        features, mask = model.frontend(samples, torch.tensor([samples.shape[1]]))
        if hasattr(model, "scored_features"):  # a PackedModel: trimmed and windowed as it predicts
            features, mask, _ = model.scored_features(features, mask)
        model.classifier(features, mask)

    for waveform in waveforms[:LATENCY_WARMUP_RUNS]:
        one(waveform)
    milliseconds = []
    for waveform in tqdm(waveforms, desc="latency", unit="utt", disable=not progress, leave=False):
        started = time.perf_counter()
        one(waveform)
        milliseconds.append(1000 * (time.perf_counter() - started))
    return float(np.median(milliseconds)), float(np.percentile(milliseconds, 90))


def spread_sample(count: int, wanted: int) -> list[int]:
    """`wanted` positions spread evenly over `count` items (all of them if fewer), deterministic."""
    if wanted >= count:
        return list(range(count))
    return sorted(set(np.linspace(0, count - 1, wanted).round().astype(int).tolist()))
