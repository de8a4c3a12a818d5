"""`quads.load`: a packed model file becomes a ready module that turns audio into intents.

Loading reads safetensors tensors and a JSON header only; the architecture is rebuilt from its config dict by
quads' own code, so a model file can never execute anything.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from quads.audio import (
    AudioWarning,
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
from quads.runtime.speech_window import max_input_frames, scored_window


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
        # True: long pauses trimmed, the level moved into the training range, over-long clips cut to their loudest
        # window (`quads.runtime.speech_window`);
        # False: every clip scored exactly as recorded (one longer than the encoder's window is then an error)
        self.score_window = True

    def forward(self, features: Tensor, mask: Tensor):
        return self.classifier(features, mask)

    @property
    def max_seconds(self) -> float | None:
        """The longest audio the model hears at once (a Whisper student's position table); None: any length.
        Longer audio is scored on its loudest window of this length (`quads.runtime.speech_window`)."""
        frames = max_input_frames(self.classifier)
        return None if frames is None else frames * self.frontend_config.hop_length / self.frontend_config.sample_rate

    def scored_features(self, features: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The frames of a padded batch the model scores (`quads.runtime.speech_window.scored_window`; all of them
        when `score_window` is False), and which rows were cut to the longest window it hears."""
        if not self.score_window:
            return features, mask, torch.zeros(features.shape[0], dtype=torch.bool)
        config = self.frontend_config
        return scored_window(features, mask, config.sample_rate / config.hop_length, max_input_frames(self.classifier))

    def scored_clips(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[int]]:
        """`scored_features` for unbatched [n_mels, T] features, one clip at a time (as `quads eval` reads them);
        also the positions of the clips cut to the longest window."""
        kept, cropped = [], []
        for position, item in enumerate(features):
            window, window_mask, cut = self.scored_features(item.unsqueeze(0),
                                                            torch.ones(1, item.shape[-1], dtype=torch.bool))
            kept.append(window[0, :, : int(window_mask.sum())])
            if bool(cut[0]):
                cropped.append(position)
        return kept, cropped

    def predict_waveforms(self, waveforms: Sequence[np.ndarray], top_k: int = 3) -> list[Prediction]:
        """The best `top_k` intents for each mono float waveform at the front-end's sample rate."""
        return self._predict(waveforms, [f"waveform {index}" for index in range(len(waveforms))], top_k)

    def predict_files(self, paths: Sequence[str | Path], top_k: int = 3) -> list[Prediction]:
        """The best `top_k` intents for each audio file (any rate, mono or multichannel)."""
        rate, waveforms = self.frontend_config.sample_rate, []
        for path in paths:
            waveform = load_audio(path, rate)
            check_min_samples(waveform, path, self.frontend_config.hop_length, rate)
            warn_if_misleading(path, audio_sample_rate(path), len(waveform), rate)
            waveforms.append(waveform)
        return self._predict(waveforms, [str(path) for path in paths], top_k)

    def _predict(self, waveforms: Sequence[np.ndarray], names: Sequence[str], top_k: int) -> list[Prediction]:
        config = self.frontend_config
        for name, waveform in zip(names, waveforms, strict=True):
            check_min_samples(np.asarray(waveform), name, config.hop_length, config.sample_rate)
        padded, lengths = pad_batch(list(waveforms))
        with torch.no_grad():
            features, mask = self.frontend(padded, lengths)
            features, mask, cropped = self.scored_features(features, mask)
            for name, waveform, cut in zip(names, waveforms, cropped.tolist(), strict=True):
                if cut:
                    warn_cropped(name, len(waveform) / config.sample_rate, self.max_seconds or 0.0)
            probabilities = torch.softmax(self.classifier(features, mask).logits, dim=-1)
        best = probabilities.topk(min(top_k, probabilities.shape[-1]), dim=-1)
        return [
            Prediction(self.labels[int(indices[0])], float(values[0]),
                       tuple((self.labels[int(i)], float(v)) for v, i in zip(values, indices, strict=True)))
            for values, indices in zip(best.values, best.indices, strict=True)
        ]


def warn_cropped(name: str, seconds: float, window_seconds: float) -> None:
    """The warning for audio longer than the model hears at once."""
    warnings.warn(f"{name}: {seconds:.1f} s long, longer than the {window_seconds:g} s this model hears at once "
                  f"even with its pauses trimmed; scored on its loudest {window_seconds:g} s", AudioWarning,
                  stacklevel=4)


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
