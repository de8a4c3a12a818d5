"""Models from plain data: a preset name or a JSON-able config dict -> the architecture, never stored code.

This is how a packed model file, a checkpoint or a YAML recipe rebuilds a model: `encoder.config_dict()`
(or `classifier.config_dict()`) is stored, `build_encoder` / `build_classifier` turn it back into modules
with the same shapes, and the weights are loaded into them.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from quads.errors import ConfigError
from quads.models.classifier import IntentClassifier
from quads.models.conv import CONV_PRESETS, ConvConfig, ConvEncoder
from quads.models.encoder import Encoder
from quads.models.transformer import TRANSFORMER_PRESETS, TransformerConfig, TransformerEncoder

ENCODER_TYPES = ("conv", "transformer", "whisper")
PRESETS: dict[str, dict[str, Any]] = {
    **{name: {"type": "conv", **dataclasses.asdict(config)} for name, config in CONV_PRESETS.items()},
    **{name: {"type": "transformer", **dataclasses.asdict(config)} for name, config in TRANSFORMER_PRESETS.items()},
}


# Students cut from a pretrained Whisper encoder (`whisper_student`): the checkpoint and the cut. 500 positions
# = 10 s of audio, plenty for commands, and 1,000 fewer rows to store than Whisper's 30 s table. "-ffnN" keeps
# N of each layer's 1,536 feed-forward units, the most important ones (`quads.models.pruning`).
PRETRAINED_STUDENTS: dict[str, tuple[str, dict[str, int]]] = {
    **{f"whisper-tiny.en-{layers}l": ("tiny.en", {"encoder_layers": layers, "max_source_positions": 500})
       for layers in (1, 2, 3, 4)},
    **{f"whisper-tiny.en-{layers}l-ffn{width}": (
        "tiny.en", {"encoder_layers": layers, "max_source_positions": 500, "encoder_ffn_dim": width})
       for layers in (1, 2, 3, 4) for width in (192, 384, 768)},
}


def preset_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The config dict of a named preset (e.g. "conv-200k"), with optional overrides such as n_mels=128."""
    if name not in PRESETS:
        raise ConfigError(f"unknown encoder preset {name!r}{_suggest(name, PRESETS)}; presets: {', '.join(PRESETS)}")
    return {**PRESETS[name], **overrides}


def build_encoder(config: dict[str, Any] | str) -> Encoder:
    """An encoder from its config dict (as `Encoder.config_dict()` returns) or a preset name."""
    if isinstance(config, str):
        config = preset_config(config)
    if not isinstance(config, dict) or "type" not in config:
        raise ConfigError(
            f"encoder config must be a mapping with a 'type' key ({', '.join(ENCODER_TYPES)}), got {config!r}"
        )
    fields = {key: value for key, value in config.items() if key != "type"}
    kind = config["type"]
    if kind == "conv":
        return ConvEncoder(_dataclass_from(ConvConfig, fields, "conv encoder"))
    if kind == "transformer":
        return TransformerEncoder(_dataclass_from(TransformerConfig, fields, "transformer encoder"))
    if kind == "whisper":
        from quads.models.whisper import ENCODER_CONFIG_KEYS, WhisperTeacherEncoder, whisper_config

        unknown = sorted(set(fields) - set(ENCODER_CONFIG_KEYS))
        if unknown:
            raise ConfigError(f"whisper encoder: unknown key {unknown[0]!r}{_suggest(unknown[0], ENCODER_CONFIG_KEYS)}")
        return WhisperTeacherEncoder(whisper_config("tiny", **fields))
    raise ConfigError(
        f"unknown encoder type {kind!r}{_suggest(str(kind), ENCODER_TYPES)}; expected one of {', '.join(ENCODER_TYPES)}"
    )


def build_classifier(config: dict[str, Any]) -> IntentClassifier:
    """An IntentClassifier from `IntentClassifier.config_dict()`: {"encoder": {...}, "num_labels": C, "head": {...}}."""
    if not isinstance(config, dict):
        raise ConfigError(f"classifier config must be a mapping, got {type(config).__name__}")
    unknown = sorted(set(config) - {"encoder", "num_labels", "head"})
    if unknown:
        raise ConfigError(
            f"classifier config: unknown key {unknown[0]!r}{_suggest(unknown[0], ('encoder', 'num_labels', 'head'))}"
        )
    for key in ("encoder", "num_labels"):
        if key not in config:
            raise ConfigError(f"classifier config: missing key {key!r}")
    head = dict(config.get("head") or {"kind": "linear"})
    unknown = sorted(set(head) - {"kind", "hidden_dim", "dropout", "pooling", "slots"})
    if unknown:
        raise ConfigError(
            f"classifier head config: unknown key {unknown[0]!r}; expected kind, hidden_dim, dropout, pooling, slots"
        )
    return IntentClassifier(
        build_encoder(config["encoder"]),
        config["num_labels"],
        head=head.get("kind", "linear"),
        head_hidden_dim=head.get("hidden_dim"),
        head_dropout=head.get("dropout", 0.1),
        pooling=head.get("pooling", "mean"),
        slots=head.get("slots"),
    )


def build_student(
    encoder: str | dict[str, Any],
    num_labels: int,
    n_mels: int | None = None,
    head: str = "linear",
    pooling: str = "mean",
    slots: list[list[int]] | None = None,
    calibration: Sequence[tuple[Tensor, Tensor]] | None = None,
    **overrides: Any,
) -> IntentClassifier:
    """A fresh student classifier from a preset name (or encoder config dict), with field overrides such as
    n_mels=128 or d_model=96 (unknown fields raise a ConfigError naming the closest one).

    `whisper:NAME_OR_DIR` starts the student from a pretrained Whisper encoder (`whisper_student`: its first
    `encoder_layers` layers, `max_source_positions` positions), and so do the `PRETRAINED_STUDENTS` names
    (e.g. "whisper-tiny.en-2l"); their mel bins are the checkpoint's. `slots` is the slot layout of a "slots"
    head (`quads.models.slots.slot_layout` of the labels). `calibration`, (features, mask) batches of real
    speech, chooses which feed-forward units a narrowed Whisper student keeps (other students ignore it)."""
    if isinstance(encoder, str) and (encoder.startswith("whisper:") or encoder in PRETRAINED_STUDENTS):
        from quads.models.whisper import whisper_student

        checkpoint, cut = PRETRAINED_STUDENTS.get(encoder, (encoder.partition(":")[2], {}))
        module = whisper_student(checkpoint, calibration=calibration, **{**cut, **overrides})
        if n_mels is not None and n_mels != module.n_mels:
            raise ConfigError(f"student {encoder} hears {module.n_mels} mel bins; set data.n_mels to {module.n_mels}")
        return IntentClassifier(module, num_labels, head=head, pooling=pooling, slots=slots)
    config = preset_config(encoder) if isinstance(encoder, str) else dict(encoder)
    if n_mels is not None:
        config["n_mels"] = n_mels
    config.update(overrides)
    return IntentClassifier(build_encoder(config), num_labels, head=head, pooling=pooling, slots=slots)


def _dataclass_from(cls: type, fields: dict[str, Any], what: str) -> Any:
    known = [field.name for field in dataclasses.fields(cls)]
    for key in fields:
        if key not in known:
            raise ConfigError(f"{what}: unknown key {key!r}{_suggest(key, known)}; expected some of {', '.join(known)}")
    return cls(**fields)


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
