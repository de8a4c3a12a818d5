"""Augmentations of log-mel training batches ([B, C, T] features): frequency warping and SpecAugment masks.

`frequency_warp` imitates another speaker's vocal tract (VTLP, Jaitly & Hinton 2013): each clip's spectrum is
stretched or squeezed along frequency by a factor drawn from [1 - w, 1 + w], so formants move the way they do
between a shorter and a longer vocal tract. Synthetic corpora have few voices; real users have many.
Both draw from a seeded generator, so a run is repeatable.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from quads.audio import SAMPLE_RATE, hz_to_slaney_mel, mel_band_edges
from quads.training.batches import Batch


@lru_cache(maxsize=4)
def mel_band_centres(n_mels: int, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, float, float]:
    """The centre frequency (Hz) of each band of Whisper's Slaney filterbank, and the lowest mel and mel step."""
    edges = mel_band_edges(n_mels, sample_rate)
    mel_min, mel_next = hz_to_slaney_mel(edges[:2])
    return edges[1:-1], float(mel_min), float(mel_next - mel_min)


def frequency_warp(batch: Batch, generator: torch.Generator, max_warp: float,
                   sample_rate: int = SAMPLE_RATE) -> Batch:
    """Each clip's log-mel bands read at frequency f / a, with a ~ U(1 - max_warp, 1 + max_warp) per clip,
    interpolated linearly between bands (bands past the top repeat the top band). Padding stays zero."""
    inputs = batch.inputs
    bsz, channels, _ = inputs.shape
    factors = 1.0 + max_warp * (2.0 * torch.rand(bsz, generator=generator, dtype=torch.float64) - 1.0)
    centres, mel_min, step = mel_band_centres(channels, sample_rate)
    source_hz = torch.from_numpy(centres)[None, :] / factors[:, None]                       # [B, C]
    source_mel = torch.from_numpy(hz_to_slaney_mel(source_hz.numpy().ravel())).view(bsz, channels)
    position = ((source_mel - mel_min) / step - 1.0).clamp(0.0, channels - 1.0)             # fractional band index
    below = position.floor().long().clamp(max=channels - 2)
    weight = (position - below).to(inputs.dtype)[:, :, None]
    index = below[:, :, None].expand(-1, -1, inputs.shape[2])
    lower = inputs.gather(1, index)
    upper = inputs.gather(1, index + 1)
    return Batch(lower + weight * (upper - lower), batch.mask, batch.labels, batch.index)


def spec_augment(batch: Batch, generator: torch.Generator, max_time: int = 12, max_freq: int = 10) -> Batch:
    """Two time masks and two frequency masks per utterance (features [B, C, T]); deterministic via `generator`."""
    inputs = batch.inputs.clone()
    bsz, channels, frames = inputs.shape
    lengths = batch.mask.sum(1)
    for _ in range(2):
        widths = torch.randint(0, max_freq + 1, (bsz,), generator=generator)
        starts = (torch.rand(bsz, generator=generator) * (channels - widths).clamp_min(1)).long()
        band = torch.arange(channels)[None, :]
        inputs.masked_fill_(((band >= starts[:, None]) & (band < (starts + widths)[:, None]))[:, :, None], 0.0)
        widths = torch.minimum(torch.randint(0, max_time + 1, (bsz,), generator=generator), lengths // 5)
        starts = (torch.rand(bsz, generator=generator) * (lengths - widths).clamp_min(1)).long()
        span = torch.arange(frames)[None, :]
        inputs.masked_fill_(((span >= starts[:, None]) & (span < (starts + widths)[:, None]))[:, None, :], 0.0)
    return Batch(inputs, batch.mask, batch.labels, batch.index)
