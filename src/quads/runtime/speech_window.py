"""Which frames of a recording a model scores: the speech with a little silence around it, at most as long as
the model hears at once.

The synthetic corpora pad each command with 0.05-0.4 s of silence, so a student never hears a long pause, and a
real recording that starts seconds before the speech is heard worse (`bench/bench_conditions.py`, lead-in rows).
A silence before or after the speech longer than any training clip has is cut to what a typical one has
(`LEAD_SECONDS`, `TRAIL_SECONDS`); a clip with shorter pauses is scored exactly as recorded. Speech is a frame
whose loudness (mean log10 mel power) is both `ABOVE_FLOOR_BELS` over the clip's quiet frames (its 10th
percentile) and at most `BELOW_PEAK_BELS` under its loudest frame. A clip recorded quieter or louder than any
training clip is then moved to a typical training level (`quads.runtime.level`). Then a Whisper student, which
keeps the first `max_source_positions` rows of Whisper's position table (500 = 10 s by default), scores a clip
that is still longer on its loudest window that fits, where its encoder would refuse the whole batch. The
runtime (`PackedModel.scored_features`: `predict_*` and `quads eval`) does all three, on log-mel frames;
training does none (its teacher frames are computed on the clips as they are).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quads.audio import log10_mel_power
from quads.runtime.level import level_into_range

# (longest kept as is, trimmed down to): just over the longest silence `speech_bounds` finds in 800 training clips
# of the built-in corpus, and about their median. Before the speech: median 0.22 s, longest 0.49 s; after it
# (with the room's reverberation): median 0.56 s, longest 0.95 s.
LEAD_SECONDS = (0.6, 0.25)
TRAIL_SECONDS = (1.0, 0.55)
ABOVE_FLOOR_BELS = 0.3  # speech: 3 dB over the clip's quiet frames (10 dB missed quiet words in noisy clips) ...
BELOW_PEAK_BELS = 3.5  # ... and at most 35 dB under its loudest frame
FLOOR_QUANTILE = 0.1


def max_input_frames(classifier: nn.Module) -> int | None:
    """The longest input, in log-mel frames, the classifier's encoder accepts; None when any length is fine."""
    return getattr(getattr(classifier, "encoder", None), "max_input_frames", None)


def frame_loudness(features: Tensor) -> Tensor:
    """[B, n_mels, T] Whisper-normalised log-mels -> [B, T] mean log10 mel power per frame."""
    return log10_mel_power(features).mean(dim=1)


def speech_bounds(features: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per row, the first and last frame that sound like speech (0 and length - 1 when none does)."""
    loudness = frame_loudness(features)
    quiet = torch.nanquantile(loudness.masked_fill(~mask, float("nan")), FLOOR_QUANTILE, dim=-1)
    peak = loudness.masked_fill(~mask, float("-inf")).amax(dim=-1)
    threshold = torch.maximum(quiet + ABOVE_FLOOR_BELS, peak - BELOW_PEAK_BELS)
    speech = (loudness > threshold.unsqueeze(1)) & mask
    lengths = mask.sum(dim=-1)
    found = speech.any(dim=-1)
    first = torch.where(found, speech.int().argmax(dim=-1), 0)
    last = torch.where(found, speech.shape[1] - 1 - speech.flip(-1).int().argmax(dim=-1), lengths - 1)
    return first, last


def shifted(features: Tensor, mask: Tensor, starts: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Each row's frames [start, start + length), left-aligned, zero-padded to the longest row."""
    width = max(int(lengths.max()), 1) if lengths.numel() else 1
    positions = (starts.unsqueeze(1) + torch.arange(width, device=features.device)).clamp(max=features.shape[-1] - 1)
    kept_mask = torch.arange(width, device=features.device).unsqueeze(0) < lengths.unsqueeze(1)
    kept = features.gather(2, positions.unsqueeze(1).expand(-1, features.shape[1], -1))
    return kept.masked_fill(~kept_mask.unsqueeze(1), 0.0), kept_mask


def trim_long_silences(features: Tensor, mask: Tensor, frames_per_second: float) -> tuple[Tensor, Tensor]:
    """The batch with a silence before the speech longer than LEAD_SECONDS[0] cut to LEAD_SECONDS[1], and one after
    it longer than TRAIL_SECONDS[0] cut to TRAIL_SECONDS[1]."""
    if features.shape[-1] == 0:
        return features, mask
    (long_lead, kept_lead), (long_trail, kept_trail) = (
        (round(seconds * frames_per_second) for seconds in pair) for pair in (LEAD_SECONDS, TRAIL_SECONDS))
    lengths = mask.sum(dim=-1)
    first, last = speech_bounds(features, mask)
    starts = torch.where(first > long_lead, first - kept_lead, 0)
    ends = torch.where(lengths - 1 - last > long_trail, last + 1 + kept_trail, lengths)
    if bool((starts == 0).all()) and bool((ends == lengths).all()):
        return features, mask
    return shifted(features, mask, starts, ends - starts)


def loudest_starts(features: Tensor, mask: Tensor, frames: int) -> Tensor:
    """Per row, the first frame of the `frames`-long window with the most summed loudness; 0 for rows no longer
    than `frames`."""
    lengths = mask.sum(dim=-1)
    total = features.shape[-1]
    if total <= frames:
        return torch.zeros_like(lengths)
    loudness = (frame_loudness(features) * mask).double()  # float64: long running sums stay exact enough
    running = F.pad(loudness.cumsum(dim=-1), (1, 0))
    window_sums = running[:, frames:] - running[:, :-frames]  # [B, T - frames + 1], by first frame
    starts = torch.arange(total - frames + 1, device=features.device)
    inside = starts.unsqueeze(0) <= (lengths - frames).unsqueeze(1)
    best = window_sums.masked_fill(~inside, float("-inf")).argmax(dim=-1)
    return torch.where(lengths > frames, best, torch.zeros_like(best))


def scored_window(features: Tensor, mask: Tensor, frames_per_second: float,
                  max_frames: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """What a model scores of a padded batch (features [B, n_mels, T], mask [B, T]): long pauses trimmed, the level
    brought into the training range (`quads.runtime.level`), then every row still longer than `max_frames` cut to
    its loudest window. Returns (features, mask, cropped [B])."""
    features, mask = trim_long_silences(features, mask, frames_per_second)
    features = level_into_range(features, mask)
    lengths = mask.sum(dim=-1)
    if max_frames is None or features.shape[-1] <= max_frames:
        return features, mask, torch.zeros_like(lengths, dtype=torch.bool)
    starts = loudest_starts(features, mask, max_frames)
    kept, kept_mask = shifted(features, mask, starts, lengths.clamp(max=max_frames))
    return kept, kept_mask, lengths > max_frames

