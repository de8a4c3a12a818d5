"""`quads.load`: a packed model file becomes a ready module that turns audio into intents.

Loading reads safetensors tensors and a JSON header only; the architecture is rebuilt from its config dict by
quads' own code, so a model file can never execute anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from quads.audio import (
    FrontEndConfig,
    LogMelSpectrogram,
    audio_sample_rate,
    check_min_samples,
    load_audio,
    pad_batch,
    warn_if_misleading,
)
from quads.compression.file_checks import check_model_metadata, check_model_state, check_tensor_table
from quads.compression.packed import ModelFileError
from quads.compression.packed_reader import load_packed, read_packed_header
from quads.errors import QuadsError


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float
    top: tuple[tuple[str, float], ...]  # the best few (label, probability), best first


class PackedModel(nn.Module):
    """A loaded student: `forward(features, mask)` like the classifier, plus `predict` on waveforms or files."""

    def __init__(self, classifier: nn.Module, frontend_config: FrontEndConfig, labels: list[str], metadata: dict):
        super().__init__()
        self.classifier = classifier
        self.frontend_config = frontend_config
        self.frontend = LogMelSpectrogram(frontend_config)
        self.labels = labels
        self.metadata = metadata

    def forward(self, features: Tensor, mask: Tensor):
        return self.classifier(features, mask)

    @torch.no_grad()
    def predict_waveforms(self, waveforms: Sequence[np.ndarray], top_k: int = 3) -> list[Prediction]:
        config = self.frontend_config
        for index, waveform in enumerate(waveforms):
            check_min_samples(np.asarray(waveform), f"waveform {index}", config.hop_length, config.sample_rate)
        padded, lengths = pad_batch(list(waveforms))
        features, mask = self.frontend(padded, lengths)
        probabilities = torch.softmax(self.classifier(features, mask).logits, dim=-1)
        best = probabilities.topk(min(top_k, probabilities.shape[-1]), dim=-1)
        return [
            Prediction(self.labels[int(indices[0])], float(values[0]),
                       tuple((self.labels[int(i)], float(v)) for v, i in zip(values, indices, strict=True)))
            for values, indices in zip(best.values, best.indices, strict=True)
        ]

    def predict_files(self, paths: Sequence[str | Path], top_k: int = 3) -> list[Prediction]:
        rate, waveforms = self.frontend_config.sample_rate, []
        for path in paths:
            waveform = load_audio(path, rate)
            check_min_samples(waveform, path, self.frontend_config.hop_length, rate)
            warn_if_misleading(path, audio_sample_rate(path), len(waveform), rate)
            waveforms.append(waveform)
        return self.predict_waveforms(waveforms, top_k)


def load(path: str | Path) -> PackedModel:
    """Load a packed model file written by `quads export`; the module is in eval mode."""
    from quads.models import build_classifier

    path = Path(path)
    # Every field is checked before the file's payload is read and before anything is built
    # (quads.compression.file_checks).
    header = read_packed_header(path)
    spec = check_model_metadata(path, header["metadata"], file_bytes=path.stat().st_size)
    state, metadata = load_packed(path, check_table=lambda table: check_tensor_table(path, table, spec))
    if metadata != header["metadata"]:
        raise ModelFileError(f"{path}: the model file changed while it was being read")
    check_model_state(path, state, spec)
    try:
        classifier = build_classifier(spec.architecture)
        classifier.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError, QuadsError) as error:
        raise ModelFileError(f"{path}: the model file's contents do not fit together ({error})") from None
    return PackedModel(classifier, FrontEndConfig(**spec.frontend), spec.labels, metadata).eval()
