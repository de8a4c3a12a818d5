"""Experiment configuration: plain dataclasses with defaults that run, loadable from YAML.

One YAML file reproduces one experiment (see `configs/`). Unknown keys are errors that name the key and
suggest the closest valid one, because a silently ignored typo (`alpah: 0.5`) wastes a training run.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import hashlib
import json
import math
import os
import types
import typing
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from quads.errors import ConfigError

PHASES = ("distill", "quantize")


@dataclass
class DataConfig:
    """Where the corpus is and how audio becomes student features."""

    path: str = ""  # FSC-layout dir, SLURP dir or manifest CSV; empty = the built-in synthetic corpus
    n_mels: int = 80
    slurp_recordings: str = "headset"  # headset | farfield | both
    cache_dir: str = ""  # feature / teacher cache; empty = ~/.cache/quads or $QUADS_CACHE_DIR
    skip_missing_audio: bool = False
    loader_workers: int = 0  # DataLoader processes reading batches ahead from the shards (0: read in the loop)

    def __post_init__(self) -> None:
        # `~/corpus` and its expansion name one folder: spelled one way however the config is built (YAML, --set,
        # dataclasses.replace, the Python API), so run fingerprints and config.yaml agree
        self.path = os.path.expanduser(self.path)
        self.cache_dir = os.path.expanduser(self.cache_dir)


@dataclass
class TeacherConfig:
    """The frozen pretrained teacher and stage 0 (pre-tuning its intent head)."""

    spec: str = "whisper:tiny.en"  # whisper:tiny.en (packaged) | whisper:NAME_OR_DIR | speech_embedding | ...
    head: str = "slots"  # linear | mlp | attention | attnpool | slots (attnpool + classifier per label slot)
    epochs: int = 15  # over the built-in corpus's 4,588 train clips (smaller corpora: scale_epochs)
    lr: float = 3e-3
    batch_size: int = 64
    weight_decay: float = 1e-2
    dropout: float = 0.1
    # Stage 0 with the encoder unfrozen (Whisper teachers only): fine-tune encoder + the teacher head (a slot head,
    # else linear) with CE on the teacher's own log-mels for `unfreeze_epochs`, at the student's batch size and
    # SpecAugment, then treat the tuned encoder as the frozen teacher; a Whisper student cut from it starts from
    # the tuned layers. With encoder_lr 1e-4 on the built-in test: teacher +2.5 points, students -1.4 to +0.4
    # (bench/README.md, "Fine-tuning the teacher's encoder"); off.
    unfreeze: bool = False
    unfreeze_epochs: int = 3
    encoder_lr: float = 1e-5


@dataclass
class StudentConfig:
    """The small encoder that is distilled and quantized."""

    # a preset name from quads.models: pretrained (whisper-tiny.en-3l: the teacher's first 3 of 4 layers) or from
    # scratch (conv-200k, transformer-1m, ...), or whisper:NAME_OR_DIR (cut with overrides {encoder_layers: N})
    encoder: str = "whisper-tiny.en-3l"
    # linear | mlp | norm (LayerNorm + linear, the attnpool teacher head's layout) | slots (an attention pooling and
    # classifier per slot of the intent label, e.g. FSC's action, object, location; `pooling` does not apply)
    head: str = "slots"
    pooling: str = "attention"  # mean | attention (learned attention pooling over the encoder's frames)
    # Start the student's pooling and head from the pre-tuned teacher head's when their shapes match (a student
    # cut from the teacher then begins as the teacher's own classifier on its first layers).
    init_head: bool = True
    overrides: dict[str, Any] = field(default_factory=dict)  # preset fields to change, e.g. {width: 96}


@dataclass
class DistillConfig:
    """L_dis = alpha * L1(z_teacher, P(z_student)) + (1 - alpha) * CE, plus optional logit KL at temperature T."""

    alpha: float = 0.5
    logit_weight: float = 0.0
    temperature: float = 2.0
    # What the L1 term compares: "pooled" (z, one vector per utterance, the paper's) or "frames" (every
    # encoder frame, teacher frames resampled to the student's frame count): far more signal per utterance.
    target: str = "frames"
    standardize_teacher: bool = True  # z-score teacher embeddings (train stats): alpha means the same for any teacher


@dataclass
class QuantConfig:
    """Codebook quantization and the QUADS multi-stage schedule."""

    bits: int = 4
    # fnmatch pattern on parameter name -> bits (first match wins), instead of `bits`.
    per_layer: dict[str, int] = field(default_factory=dict)
    # fnmatch pattern -> the least width a matching tensor gets, whatever `bits` or per_layer say. Whisper's
    # position table is a fixed sinusoid: 8 bits keep it. The first conv (2% of the 2-layer student's weights)
    # and the attention projections are the most sensitive tensors at 2 bits (bench/README, sensitivity): at 4
    # bits, layer 0's lifted 2-bit QUADS from 40.8 to 59.4 % valid (2-layer student) for ~147 KB, and every
    # layer's from 59.2 to 68.2 % valid (3-layer student) for 295 KB more.
    min_bits: dict[str, int] = field(default_factory=lambda: {
        "*embed_positions*": 8, "*conv1.weight": 8, "*self_attn.*_proj.weight": 4})
    exclude: list[str] = field(default_factory=list)
    # L = gamma * L_dis + (1 - gamma) * (centroid_weight * L_centroid + CE). 0.9 rather than 0.5 took 2-bit QUADS on
    # FSDD's real speakers from 82.0 +- 2.7 to 86.7 +- 2.8 % (3 seeds, synthetic digits) and left 4-bit where it was.
    gamma: float = 0.9
    centroid_weight: float = 1.0
    kmeans_iterations: int = 25
    # 0 = one codebook per tensor (the paper's). N = a b-bit tensor is split into runs of whole rows (output
    # channels) of about N * 2^b weights, each with its own 2^b centroids: a float16 codebook costs at most
    # 16 / (N * b) of its indices, and rows of different scales stop sharing one set of values. 64 rather than 256
    # (bench/README, "Group codebooks"; 2-core Intel machine, distilled students reused): 2-bit QUADS on FSDD's
    # real speakers 86.1 +- 1.9 -> 87.6 +- 1.8 % (3 seeds, every seed up), long-sentence test 86.7 -> 89.4 %,
    # built-in test 91.2 -> 91.4 %; 4-bit QUADS 90.9 +- 0.6 -> 90.5 +- 0.3 % on FSDD, 85.6 -> 89.4 % on the long
    # sentences, 91.6 -> 92.1 % built-in; files +2.9 % (2-bit) and +3.4 % (4-bit). 256 over 0 had already
    # moved 2-bit QUADS 89.8 -> 91.2 % built-in and 77.8 -> 84.4 % on the long sentences.
    weights_per_centroid: int = 64
    schedule: list[list[Any]] = field(default_factory=list)  # [[phase, epochs], ...]; empty = schedule_for's
    # Where quantizing recipes start: "pretrained" = from the fp32 student (distilled for QUADS and sequential,
    # CE-only for QAT) and train `epochs` more; "scratch" = from random weights over optim.epochs (the paper's
    # 20-epoch pattern from the start, which needs a student that learns within its first distillation stage).
    init: str = "pretrained"
    epochs: int = 2
    # Epochs of the quantizing recipes on codebooks of 2 bits or fewer (0 = `epochs`). At half as many a 2-bit
    # student's valid loss was still falling; twice took 2-bit QUADS on FSDD's real speakers from 79.5 ± 4.7 to
    # 82.0 ± 2.7 % (3 seeds, synthetic digits; bench/README "Longer training at 2 bits").
    low_bit_epochs: int = 4
    # Peak learning rate of the recipes that train on codebooks of 2 bits or fewer (0 = optim.lr): weights bound
    # to 4 values need larger steps to move between clusters than the gentle fine-tuning of a pretrained student.
    # Measured on synthetic digits (2-layer tiny.en student): 2-bit QUADS 26.7% at 1e-4, 76.7% at 1e-3; 4-bit is
    # better at optim.lr (98.1% at 1e-4, 92.2% at 1e-3), so wider codebooks keep optim.lr.
    low_bit_lr: float = 1e-3
    # Peak learning rate, encoder and head alike, of the quantizing recipes with wider codebooks (0 = optim's
    # rates). Measured (4-bit QUADS, lambda 0, built-in corpus, seed 0): 2e-5 keeps the float student's valid
    # accuracy through the first distil epoch (78.3 vs 74.7 % at optim's rates) but ends lower (72.8 vs 74.0 %).
    lr: float = 0.0


PRECISIONS = ("fp32", "bf16", "auto")  # optim.precision: what the training forward runs in (quads.training.precision)


@dataclass
class OptimConfig:
    """AdamW with per-group learning rates, warm-up + cosine decay, clipping."""

    # Counted on the built-in corpus's 4,588 train clips: 4 epochs are the ~1,150 steps of 8 over its previous
    # 2,294, which 4 were too few for (built-in valid 89.9 -> 91.7 %, FSDD 87.6 -> 89.4 %); twice the clips in
    # the same steps: built-in test +1.0 (4-bit) / +1.5 (2-bit) points over 3 seeds (bench/README). Every epoch
    # count here is for that corpus: the FSDD digits (1,110 train clips) train twice as many (scale_epochs).
    epochs: int = 4
    batch_size: int = 16
    lr: float = 1e-4  # pretrained students: a fine-tuning rate (from-scratch students: 2e-3)
    head_lr: float = 5e-4  # 0 = same as lr
    projection_lr: float = 0.0  # 0 = same as lr
    weight_decay: float = 1e-2
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.02
    grad_clip: float = 1.0
    spec_augment: bool = True  # two time and two mel-band masks per training utterance (FSDD +2.5 points, 3 seeds)
    # with spec_augment: each clip's spectrum warped along frequency by a factor in [1 - w, 1 + w] (another
    # speaker's vocal tract; quads.training.feature_augment); 0 = off
    frequency_warp: float = 0.0
    bucket_by_length: bool = True  # batches of similar lengths (less padding computed; order still seeded)
    # the training forward pass: fp32, bf16 (autocast; weights, gradients and losses stay float32) or auto (bf16
    # where the CPU has AMX tiles, fp32 elsewhere; quads.training.precision). Evaluation and files are float32.
    # fp32 by default: bf16 trains 1.5x faster on AMX but its 4-bit files scored 1.1 points lower (3 paired seeds).
    precision: str = "fp32"


@dataclass
class RunConfig:
    """One experiment: data, teacher, student, losses, quantization, optimisation."""

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self, *, ignore: tuple[str, ...] = ()) -> str:
        """A short hash of the settings that change training results (e.g. to refuse a foreign checkpoint)."""
        settings = self.to_dict()
        for dotted in ignore:
            section, _, key = dotted.partition(".")
            settings.get(section, {}).pop(key, None)
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check and convert one YAML value to the annotated type, with a message naming the key."""
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {annotation.__name__} settings, got {value!r}")
        return _from_dict(annotation, value, where)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return list(value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as text: accept what float() reads
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):  # YAML reads 0123 as 83 and yes as True: never guess the string back
            raise ConfigError(f"{where}: expected a string, got {value!r}; quote it (e.g. '0123')")
        return value
    return value


def _from_dict(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = _field_types(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(known)}"
            raise ConfigError(f"unknown config key '{where}.{key}'{hint}".replace("'.", "'"))
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}".lstrip("."))
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> RunConfig:
    """Build a RunConfig from nested dicts, rejecting unknown keys and wrong types."""
    config = _from_dict(RunConfig, values or {}, "")
    validate(config)
    return config


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML recipe (or the defaults when path is None) and apply `section.key=value` overrides."""
    values: dict[str, Any] = {}
    if path:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {_one_line(error)}") from None
        except UnicodeDecodeError as error:
            raise ConfigError(f"{path}: not a UTF-8 text file (byte {error.start}); save it as UTF-8") from None
        except OSError as error:
            raise ConfigError(f"{path}: cannot read ({error.strerror})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override '{item}' must look like section.key=value")
        target = values
        parts = key.strip().split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"--set {item}: '{part}' is not a section")
        target[parts[-1]] = _override_value(parts, raw, item)
    try:
        return config_from_dict(values)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}" if path else str(error)) from None


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _override_value(parts: list[str], raw: str, item: str) -> Any:
    """A --set value: verbatim for a string setting (no YAML coercion: 0123 stays '0123'), else parsed as YAML."""
    annotation: Any = RunConfig
    for depth, part in enumerate(parts):
        if typing.get_origin(annotation) is dict:  # a free-form mapping (e.g. quant.per_layer): any key
            annotation = None
            break
        if annotation is not None and not dataclasses.is_dataclass(annotation):
            section = ".".join(parts[:depth])
            raise ConfigError(f"--set {item}: '{section}' is a setting, not a section, so "
                              f"'{'.'.join(parts)}' does not exist")
        annotation = _field_types(annotation).get(part) if annotation is not None else None
    if annotation is str:
        return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {item}: the value is not valid YAML ({_one_line(error)})") from None


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--config, --set KEY=VALUE and --quiet: the same flags on every command that runs an experiment."""
    parser.add_argument("--config", type=Path, help="YAML recipe (default: the built-in settings)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.epochs=10 (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def save_config(config: RunConfig, path: str | Path) -> None:
    from quads.atomic import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(config.to_dict(), sort_keys=False))


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and key not in ("per_layer", "min_bits", "overrides"):  # values themselves
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def changed_settings(saved: dict[str, Any] | None, current: dict[str, Any] | None) -> list[str]:
    """'key: saved -> current' for every setting that differs between two `RunConfig.to_dict()` (or any nested
    dicts of settings); empty when either is unknown."""
    if not isinstance(saved, dict) or not isinstance(current, dict):
        return []
    old, new = _flatten(saved), _flatten(current)
    return [f"{key}: {old.get(key, '(absent)')!r} there, {new.get(key, '(absent)')!r} here"
            for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)]


def parse_schedule(schedule: list[list[Any]]) -> list[tuple[str, int]]:
    """Validate a [[phase, epochs], ...] schedule."""
    stages = []
    for i, stage in enumerate(schedule):
        if not isinstance(stage, (list, tuple)) or len(stage) != 2:
            raise ConfigError(f"quant.schedule[{i}]: expected [phase, epochs], got {stage!r}")
        phase, epochs = stage
        if phase not in PHASES:
            close = difflib.get_close_matches(str(phase), PHASES, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"quant.schedule[{i}]: unknown phase '{phase}' (use {' or '.join(PHASES)}){hint}")
        if not isinstance(epochs, int) or epochs < 1:
            raise ConfigError(f"quant.schedule[{i}]: epochs must be a positive integer, got {epochs!r}")
        stages.append((phase, epochs))
    return stages


def scale_epochs(config: RunConfig, factor: int) -> RunConfig:
    """`config` with the epochs of the teacher head, the distillation and the quantize stages times `factor`
    (warm-up and teacher.unfreeze_epochs as they are): the defaults count epochs over the built-in corpus, and
    a corpus a fraction its size trains more of them for the same length of training."""
    quant = config.quant
    return replace(
        config,
        teacher=replace(config.teacher, epochs=config.teacher.epochs * factor),
        optim=replace(config.optim, epochs=config.optim.epochs * factor),
        quant=replace(quant, epochs=quant.epochs * factor, low_bit_epochs=quant.low_bit_epochs * factor,
                      schedule=[[phase, epochs * factor] for phase, epochs in parse_schedule(quant.schedule)]),
    )


def validate(config: RunConfig) -> None:
    """Value checks that span fields; raise ConfigError naming the key."""
    checks = [
        (0.0 <= config.distill.alpha <= 1.0, "distill.alpha must be in [0, 1]"),
        (0.0 <= config.quant.gamma <= 1.0, "quant.gamma must be in [0, 1]"),
        (config.distill.temperature > 0, "distill.temperature must be > 0"),
        (config.optim.epochs >= 1, "optim.epochs must be >= 1"),
        (config.optim.batch_size >= 1, "optim.batch_size must be >= 1"),
        (config.optim.lr > 0, "optim.lr must be > 0"),
        (config.quant.init in ("pretrained", "scratch"), "quant.init must be pretrained or scratch"),
        (config.quant.epochs >= 1, "quant.epochs must be >= 1"),
        (config.quant.low_bit_epochs >= 0, "quant.low_bit_epochs must be >= 0 (0 = quant.epochs)"),
        (config.quant.low_bit_lr >= 0, "quant.low_bit_lr must be >= 0 (0 = optim.lr)"),
        (config.quant.lr >= 0, "quant.lr must be >= 0 (0 = optim's rates)"),
        (config.data.n_mels in (80, 128), "data.n_mels must be 80 or 128 (Whisper's front-ends)"),
        (config.distill.target in ("pooled", "frames"), "distill.target must be pooled or frames"),
        (config.optim.precision in PRECISIONS, f"optim.precision must be one of {', '.join(PRECISIONS)}"),
        (config.student.pooling in ("mean", "attention"), "student.pooling must be mean or attention"),
        (config.data.slurp_recordings in ("headset", "farfield", "both"),
         "data.slurp_recordings must be headset, farfield or both"),
    ]
    for ok, message in checks + _range_checks(config):
        if not ok:
            raise ConfigError(message)
    from quads.compression.codebook import validate_bits

    try:
        validate_bits(config.quant.bits)
    except ConfigError as error:
        raise ConfigError(f"quant.bits: {error}") from None
    for key in ("per_layer", "min_bits"):
        for pattern, bits in getattr(config.quant, key).items():
            try:
                validate_bits(bits)
            except ConfigError as error:
                raise ConfigError(f"quant.{key}['{pattern}']: {error}") from None
    parse_schedule(config.quant.schedule)


def _range_checks(config: RunConfig) -> list[tuple[bool, str]]:
    """Every count >= 1 and every rate, weight and ratio in its range, so a typo fails before training starts."""
    teacher, optim, quant, distill = config.teacher, config.optim, config.quant, config.distill
    checks = [(0 <= config.seed < 2**32, "seed must be in [0, 2**32)")]
    for key, value in (("teacher.epochs", teacher.epochs), ("teacher.batch_size", teacher.batch_size),
                       ("teacher.unfreeze_epochs", teacher.unfreeze_epochs),
                       ("quant.kmeans_iterations", quant.kmeans_iterations)):
        checks.append((value >= 1, f"{key} must be >= 1, got {value}"))
    checks.append((quant.weights_per_centroid >= 0, "quant.weights_per_centroid must be >= 0 (0 = one codebook per "
                                                    f"tensor), got {quant.weights_per_centroid}"))
    positive = (("teacher.lr", teacher.lr), ("teacher.encoder_lr", teacher.encoder_lr))
    non_negative = (("teacher.weight_decay", teacher.weight_decay), ("optim.weight_decay", optim.weight_decay),
                    ("optim.head_lr", optim.head_lr), ("optim.projection_lr", optim.projection_lr),
                    ("optim.warmup_epochs", optim.warmup_epochs), ("optim.grad_clip", optim.grad_clip),
                    ("quant.centroid_weight", quant.centroid_weight), ("distill.logit_weight", distill.logit_weight))
    for key, value in positive:
        checks.append((value > 0, f"{key} must be > 0, got {value}"))
    for key, value in non_negative:
        checks.append((value >= 0, f"{key} must be >= 0, got {value}"))
    checks += [
        (0.0 <= optim.min_lr_ratio <= 1.0, f"optim.min_lr_ratio must be in [0, 1], got {optim.min_lr_ratio}"),
        (0.0 <= teacher.dropout < 1.0, f"teacher.dropout must be in [0, 1), got {teacher.dropout}"),
        (0.0 <= optim.frequency_warp < 0.5, f"optim.frequency_warp must be in [0, 0.5), got {optim.frequency_warp}"),
    ]
    for name in ("data", "teacher", "distill", "quant", "optim"):
        section = getattr(config, name)
        for item in dataclasses.fields(section):
            value = getattr(section, item.name)
            if isinstance(value, float) and not math.isfinite(value):
                checks.insert(0, (False, f"{name}.{item.name} must be a finite number, got {value}"))
    return checks
