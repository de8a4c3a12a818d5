"""Whisper checkpoints in CTranslate2's format, read without CTranslate2, as transformers' tensors.

A CTranslate2 model folder holds `model.bin` (the weights), `config.json` (generation settings; no
`model_type`) and a tokenizer. `model.bin`, binary format versions 1-6, is little-endian:

    u32 version | string spec name ("WhisperSpec") | u32 spec revision (version >= 2) | u32 variable count
    per variable: string name | u8 rank | u32 dim x rank | u8 dtype id (version >= 4) | u32 byte count | bytes
    u32 alias count | per alias: string alias | string variable name        (version >= 3)

where a string is a u16 length (including a trailing NUL) followed by UTF-8 bytes and the NUL. The Whisper
converter fuses the attention projections (self-attention q/k/v in `linear_0`, cross-attention k/v in
`linear_1`) and drops the key bias, which Whisper does not have; `whisper_state_dict` splits them back into
`WhisperForConditionalGeneration`'s names. Every malformed input is a `ConfigError` naming the file.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import Tensor

from quads.errors import ConfigError

MODEL_FILE = "model.bin"
SUPPORTED_VERSIONS = range(1, 7)
WHISPER_SPEC = "WhisperSpec"
# CTranslate2's DataType order (include/ctranslate2/types.h); float8 and int4 kinds are not Whisper's.
DTYPES: tuple[np.dtype, ...] = (
    np.dtype("<f4"),
    np.dtype("i1"),
    np.dtype("<i2"),
    np.dtype("<i4"),
    np.dtype("<f2"),
    np.dtype("<u2"),  # bfloat16, widened by hand below
)
BFLOAT16 = 5
MAX_RANK = 8


def is_ctranslate2_directory(directory: Path) -> bool:
    """A folder with CTranslate2's `model.bin` (transformers folders have config.json with a model_type)."""
    return (directory / MODEL_FILE).is_file()


def read_model_bin(path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """(spec name, {variable name: array}) of a CTranslate2 `model.bin`; aliases resolve to their targets."""
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            return _read(stream, path)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror or error})") from None


def _read(stream: BinaryIO, path: Path) -> tuple[str, dict[str, np.ndarray]]:
    def take(size: int, what: str) -> bytes:
        data = stream.read(size)
        if len(data) != size:
            raise ConfigError(f"{path}: truncated CTranslate2 model file (ends inside {what})")
        return data

    def number(fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, take(struct.calcsize(fmt), what))[0]

    def string(what: str) -> str:
        raw = take(number("H", what), what)
        try:
            return raw.rstrip(b"\0").decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a CTranslate2 model file (bad string in {what})") from None

    version = number("I", "the header")
    if version not in SUPPORTED_VERSIONS:
        raise ConfigError(
            f"{path}: CTranslate2 binary version {version}; this quads reads versions "
            f"{SUPPORTED_VERSIONS.start}-{SUPPORTED_VERSIONS.stop - 1}"
        )
    spec = string("the spec name") if version >= 2 else ""
    if version >= 2:
        number("I", "the spec revision")
    variables: dict[str, np.ndarray] = {}
    for index in range(number("I", "the variable count")):
        name = string(f"variable {index}'s name")
        rank = number("B", f"{name}'s rank")
        if rank > MAX_RANK:
            raise ConfigError(f"{path}: variable {name} has rank {rank}; not a CTranslate2 model file")
        shape = tuple(number("I", f"{name}'s shape") for _ in range(rank))
        dtype_id = number("B", f"{name}'s type") if version >= 4 else 0
        if dtype_id >= len(DTYPES):
            raise ConfigError(
                f"{path}: variable {name} has data type id {dtype_id}; this reader knows float32, int8, int16, "
                "int32, float16 and bfloat16 (ids 0-5)"
            )
        size = number("I", f"{name}'s byte count")
        expected = int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype_id].itemsize
        if size != expected:
            raise ConfigError(f"{path}: variable {name} holds {size} bytes, its shape {shape} needs {expected}")
        array = np.frombuffer(take(size, f"{name}'s data"), dtype=DTYPES[dtype_id]).reshape(shape)
        if dtype_id == BFLOAT16:
            array = (array.astype(np.uint32) << 16).view(np.float32)
        variables[name] = array
    if version >= 3:
        for _ in range(number("I", "the alias count")):
            alias, target = string("an alias"), string("an alias target")
            if target not in variables:
                raise ConfigError(f"{path}: alias {alias} points to a missing variable {target}")
            variables[alias] = variables[target]
    if stream.read(1):
        raise ConfigError(f"{path}: trailing bytes after the last variable; not a CTranslate2 model file")
    return spec, variables


def read_ctranslate2_whisper(directory: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(WhisperConfig fields, WhisperForConditionalGeneration state dict) of a CTranslate2 Whisper folder."""
    directory = Path(directory)
    path = directory / MODEL_FILE
    spec, variables = read_model_bin(path)
    if spec != WHISPER_SPEC:
        raise ConfigError(f"{path}: a CTranslate2 {spec or 'version-1'} model; expected a {WHISPER_SPEC}")
    try:
        config = whisper_config_fields(variables)
        state = whisper_state_dict(variables, config)
    except KeyError as error:
        raise ConfigError(f"{path}: a {WHISPER_SPEC} without the variable {error}; the file is incomplete") from None
    config.update(_generation_fields(directory / "config.json"))
    return config, state


def whisper_config_fields(variables: dict[str, np.ndarray]) -> dict[str, Any]:
    """The WhisperConfig fields implied by the tensors' shapes (layer counts, widths, vocabulary)."""

    def layers(prefix: str) -> int:
        count = 0
        while f"{prefix}/layer_{count}/ffn/linear_0/weight" in variables:
            count += 1
        return count

    d_model = int(variables["encoder/conv2/weight"].shape[0])
    vocab = int(variables["decoder/embeddings/weight"].shape[0])
    return {
        "vocab_size": vocab,
        "num_mel_bins": int(variables["encoder/conv1/weight"].shape[1]),
        "d_model": d_model,
        "encoder_layers": layers("encoder"),
        "decoder_layers": layers("decoder"),
        "encoder_attention_heads": int(variables["encoder/num_heads"]),
        "decoder_attention_heads": int(variables["decoder/num_heads"]),
        "encoder_ffn_dim": int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "decoder_ffn_dim": int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "max_source_positions": int(variables["encoder/position_encodings/encodings"].shape[0]),
        "max_target_positions": int(variables["decoder/position_encodings/encodings"].shape[0]),
        **_special_tokens(vocab),
    }


def _special_tokens(vocab: int) -> dict[str, int]:
    """Whisper's special token ids: English-only checkpoints (51864 tokens) start transcripts at 50257,
    multilingual ones (51865+) at 50258. A vocabulary too small for them (test models) uses its last id."""
    if vocab < 51864:
        return dict.fromkeys(("decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id"), vocab - 1)
    return {"decoder_start_token_id": 50257 if vocab == 51864 else 50258, "bos_token_id": 50257,
            "eos_token_id": 50256, "pad_token_id": 50256}


def _generation_fields(config_path: Path) -> dict[str, Any]:
    if not config_path.is_file():
        return {}
    try:
        settings = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{config_path}: not valid JSON ({error})") from None
    fields = {}
    if isinstance(settings, dict):
        if isinstance(settings.get("suppress_ids"), list):
            fields["suppress_tokens"] = settings["suppress_ids"]
        if isinstance(settings.get("suppress_ids_begin"), list):
            fields["begin_suppress_tokens"] = settings["suppress_ids_begin"]
    return fields


def whisper_state_dict(variables: dict[str, np.ndarray], config: dict[str, Any]) -> dict[str, Tensor]:
    """CTranslate2's Whisper variables renamed (and un-fused) to WhisperForConditionalGeneration's keys."""
    d = config["d_model"]
    state: dict[str, Tensor] = {}

    def put(name: str, array: np.ndarray) -> None:
        state[name] = torch.from_numpy(np.array(array, dtype=np.float32))

    def linear(target: str, source: str, bias: bool = True) -> None:
        put(f"{target}.weight", variables[f"{source}/weight"])
        if bias:
            put(f"{target}.bias", variables[f"{source}/bias"])

    def norm(target: str, source: str) -> None:
        put(f"{target}.weight", variables[f"{source}/gamma"])
        put(f"{target}.bias", variables[f"{source}/beta"])

    def split_projections(target: str, source: str, names: tuple[str, ...]) -> None:
        weights = np.split(variables[f"{source}/weight"], len(names), axis=0)
        biases = np.split(variables[f"{source}/bias"], len(names), axis=0)
        for name, weight, bias in zip(names, weights, biases, strict=True):
            put(f"{target}.{name}.weight", weight)
            if name != "k_proj":  # Whisper's key projections have no bias (CTranslate2 stores zeros)
                put(f"{target}.{name}.bias", bias)

    def block(target: str, source: str, cross: bool) -> None:
        norm(f"{target}.self_attn_layer_norm", f"{source}/self_attention/layer_norm")
        split_projections(f"{target}.self_attn", f"{source}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
        linear(f"{target}.self_attn.out_proj", f"{source}/self_attention/linear_1")
        if cross:
            norm(f"{target}.encoder_attn_layer_norm", f"{source}/attention/layer_norm")
            linear(f"{target}.encoder_attn.q_proj", f"{source}/attention/linear_0")
            split_projections(f"{target}.encoder_attn", f"{source}/attention/linear_1", ("k_proj", "v_proj"))
            linear(f"{target}.encoder_attn.out_proj", f"{source}/attention/linear_2")
        norm(f"{target}.final_layer_norm", f"{source}/ffn/layer_norm")
        linear(f"{target}.fc1", f"{source}/ffn/linear_0")
        linear(f"{target}.fc2", f"{source}/ffn/linear_1")

    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    put("model.encoder.embed_positions.weight", variables["encoder/position_encodings/encodings"])
    for index in range(config["encoder_layers"]):
        block(f"model.encoder.layers.{index}", f"encoder/layer_{index}", cross=False)
    norm("model.encoder.layer_norm", "encoder/layer_norm")
    put("model.decoder.embed_tokens.weight", variables["decoder/embeddings/weight"])
    put("model.decoder.embed_positions.weight", variables["decoder/position_encodings/encodings"])
    for index in range(config["decoder_layers"]):
        block(f"model.decoder.layers.{index}", f"decoder/layer_{index}", cross=True)
    norm("model.decoder.layer_norm", "decoder/layer_norm")
    if state["model.encoder.conv1.weight"].shape[0] != d:
        raise ConfigError("CTranslate2 Whisper: conv1 and conv2 disagree on the model width")
    return state


def convert_to_transformers(directory: str | Path, out_dir: str | Path) -> Path:
    """Write a CTranslate2 Whisper folder as a transformers `save_pretrained` folder (whole model)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config_fields, state = read_ctranslate2_whisper(directory)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(WhisperConfig(**config_fields))
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer = Path(directory) / "tokenizer.json"
    if tokenizer.is_file():
        (out_dir / "tokenizer.json").write_bytes(tokenizer.read_bytes())
    return out_dir
