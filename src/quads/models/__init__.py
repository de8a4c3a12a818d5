"""Encoders, heads and the intent classifier; teachers (Whisper, speech_embedding) behind one protocol.

Whisper and the teachers are imported on first use: transformers takes seconds to import and a student
alone does not need it.
"""

from __future__ import annotations

import importlib
from typing import Any

from quads.models.classifier import ClassifierOutput, IntentClassifier
from quads.models.conv import CONV_PRESETS, ConvConfig, ConvEncoder
from quads.models.encoder import Encoder, masked_mean_pool
from quads.models.head import TeacherHead, build_head
from quads.models.macs import count_macs, gmacs_at_length
from quads.models.registry import PRESETS, build_classifier, build_encoder, build_student, preset_config
from quads.models.transformer import TRANSFORMER_PRESETS, TransformerConfig, TransformerEncoder

_LAZY = {
    "WhisperTeacherEncoder": "quads.models.whisper",
    "whisper_config": "quads.models.whisper",
    "WHISPER_SIZES": "quads.models.whisper",
    "SpeechEmbeddingTeacher": "quads.models.speech_embedding",
    "FrozenTeacher": "quads.models.teacher",
    "WhisperFrozenTeacher": "quads.models.teacher",
    "build_teacher": "quads.models.teacher",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'quads.models' has no attribute {name!r}")


__all__ = [
    "CONV_PRESETS",
    "PRESETS",
    "TRANSFORMER_PRESETS",
    "ClassifierOutput",
    "ConvConfig",
    "ConvEncoder",
    "Encoder",
    "IntentClassifier",
    "TeacherHead",
    "TransformerConfig",
    "TransformerEncoder",
    "build_classifier",
    "build_encoder",
    "build_student",
    "build_head",
    "count_macs",
    "gmacs_at_length",
    "masked_mean_pool",
    "preset_config",
    *_LAZY,
]
