"""A recording's level brought into the range the training clips had.

Whisper's log-mels move with the level: a clip 30 dB quieter is every feature 0.75 lower, and the students,
trained on synthetic clips whose loudest log-mel lies between 0 and 2.2 (log10 power; 1st to 99th
percentile of the built-in corpus's training clips, median 1.2), hear it worse (`bench/bench_conditions.py`,
quieter rows). A clip whose loudest log-mel falls outside that range has its features shifted, as a gain on
the waveform would shift them, so that it lies at the training median; a clip inside it is scored as recorded.
"""

from __future__ import annotations

import torch
from torch import Tensor

from quads.audio import LOG_MEL_SCALE, log10_mel_power

TRAINED_PEAKS = (0.0, 2.2)  # log10 mel power of a clip's loudest bin: the training clips' 1st-99th percentile
TYPICAL_PEAK = 1.2  # their median: where a clip outside the range is moved


def clip_peaks(features: Tensor, mask: Tensor) -> Tensor:
    """[B] the loudest log10 mel power of each row of Whisper-normalised log-mels [B, n_mels, T]."""
    return log10_mel_power(features).masked_fill(~mask.unsqueeze(1), float("-inf")).amax(dim=(1, 2))


def level_into_range(features: Tensor, mask: Tensor) -> Tensor:
    """The batch with each row whose peak lies outside TRAINED_PEAKS moved to TYPICAL_PEAK; padding stays 0."""
    if features.shape[-1] == 0:
        return features
    peaks = clip_peaks(features, mask)
    low, high = TRAINED_PEAKS
    outside = (peaks < low) | (peaks > high)
    if not bool(outside.any()):
        return features
    shift = torch.where(outside, TYPICAL_PEAK - peaks, torch.zeros_like(peaks)) / LOG_MEL_SCALE
    return (features + shift[:, None, None]).masked_fill(~mask.unsqueeze(1), 0.0)
