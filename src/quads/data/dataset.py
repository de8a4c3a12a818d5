"""Utterances as a torch Dataset of raw waveforms, and the collate function that pads them into a batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from quads.audio import SAMPLE_RATE, load_audio, pad_batch
from quads.data.corpus import LabelMap, Utterance


class WaveformItem(NamedTuple):
    waveform: np.ndarray  # float32 mono at the dataset's sample rate
    label: int
    utt_id: str
    speaker: str


class WaveformBatch(NamedTuple):
    waveforms: torch.Tensor  # [B, S] float32, zero-padded
    lengths: torch.Tensor  # [B] long, samples per clip
    labels: torch.Tensor  # [B] long
    utt_ids: list[str]
    speakers: list[str]


class UtteranceDataset(Dataset[WaveformItem]):
    """Loads audio lazily (corpora do not fit in memory); labels are encoded up front so a bad one fails early."""

    def __init__(self, utterances: Sequence[Utterance], label_map: LabelMap, sample_rate: int = SAMPLE_RATE) -> None:
        self.utterances = list(utterances)
        self.label_map = label_map
        self.sample_rate = sample_rate
        self.labels = [label_map.encode(u.label, where=f"utterance {u.utt_id}, {u.path}") for u in self.utterances]

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> WaveformItem:
        utterance = self.utterances[index]
        waveform = load_audio(utterance.path, self.sample_rate)
        return WaveformItem(waveform, self.labels[index], utterance.utt_id, utterance.speaker)


def collate_waveforms(items: Sequence[WaveformItem]) -> WaveformBatch:
    """For DataLoader(collate_fn=...): zero-padded waveforms with their true lengths (LogMelSpectrogram's input)."""
    waveforms, lengths = pad_batch([item.waveform for item in items])
    labels = torch.tensor([item.label for item in items], dtype=torch.long)
    return WaveformBatch(waveforms, lengths, labels, [item.utt_id for item in items], [item.speaker for item in items])
