"""A tiny packed model file (a conv student, 4-bit codebooks) and the parts to write altered copies of it with a
valid checksum: what a hostile or buggy writer could produce."""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path

import torch

from quads.audio import FrontEndConfig
from quads.compression.packed import save_packed
from quads.compression.quantize import post_training_quantize
from quads.compression.spec import QuantizationSpec
from quads.models import build_classifier
from quads.models.conv import ConvConfig

LABELS = ["activate_lights_none", "bring_shoes_none", "increase_heat_kitchen"]


def tiny_model_parts(seed: int = 0) -> tuple[dict, dict, dict]:
    """(float_state, quantized, metadata) of a tiny conv student, as `quads export` would pass to save_packed."""
    torch.manual_seed(seed)
    encoder = {"type": "conv", **asdict(ConvConfig(stem_channels=16, stage_channels=(16,), stage_strides=(2,),
                                                   stage_blocks=(1,), kernel_size=3))}
    encoder = {key: list(value) if isinstance(value, tuple) else value for key, value in encoder.items()}
    classifier = build_classifier({"encoder": encoder, "num_labels": len(LABELS)}).eval()
    quantizer = post_training_quantize(classifier, QuantizationSpec(bits=4))
    quantized = quantizer.export()
    float_state = {name: tensor for name, tensor in classifier.state_dict().items() if name not in quantized}
    metadata = {"architecture": classifier.config_dict(), "frontend": asdict(FrontEndConfig()), "labels": LABELS,
                "recipe": "ptq", "bits": 4, "metrics": {"test_accuracy": 0.5}}
    return float_state, quantized, metadata


def write_tiny_model(path: Path, *, metadata: dict | None = None, float_state: dict | None = None,
                     seed: int = 0) -> Path:
    """The tiny model file, with `metadata` / `float_state` replaced when given (the checksum stays valid)."""
    parts_float, quantized, parts_metadata = tiny_model_parts(seed)
    save_packed(path, parts_float if float_state is None else float_state, quantized,
                parts_metadata if metadata is None else metadata)
    return path


def altered_metadata(change) -> dict:
    """A deep copy of the tiny model's metadata after `change(metadata)`."""
    metadata = copy.deepcopy(tiny_model_parts()[2])
    change(metadata)
    return metadata
