"""What a hostile or unlucky user gets (issue 11): a one-line error and exit status 2, or a handled case, never a
traceback or a silently wrong result. Each test is one row of the issue's table."""

from __future__ import annotations

import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from tests.helpers.model_files import LABELS, altered_metadata, tiny_model_parts, write_tiny_model

from quads.audio import AudioWarning
from quads.cli import main
from quads.compression.packed import ModelFileError
from quads.config import load_config
from quads.errors import AudioError, ConfigError
from quads.runtime.model import load


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("model") / "model.quads")


def write_wav(path: Path, samples: int, rate: int = 16000) -> Path:
    rng = np.random.default_rng(samples)
    soundfile.write(path, (0.1 * rng.standard_normal(samples)).astype(np.float32), rate, subtype="PCM_16")
    return path


def one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"quads {command}: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------------------------------------- short audio


@pytest.mark.parametrize("samples", [1, 80, 159])
def test_predict_on_audio_shorter_than_one_frame_names_the_minimum(model_file, tmp_path, capsys, samples):
    wav = write_wav(tmp_path / "short.wav", samples)
    assert main(["predict", str(model_file), str(wav)]) == 2
    assert "at least 160 samples" in one_line_error(capsys, "predict")


def test_predict_on_one_frame_of_audio_answers(model_file, tmp_path, capsys):
    wav = write_wav(tmp_path / "frame.wav", 160)
    assert main(["predict", str(model_file), str(wav)]) == 0
    assert capsys.readouterr().out.split("\t")[1].split(" ")[0] in LABELS


def test_eval_on_a_corpus_with_a_too_short_clip_names_the_file(model_file, tmp_path, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    lines = ["path,label"]
    for index, label in enumerate(LABELS):
        write_wav(clips / f"{index}.wav", 100 if index == 1 else 4000)
        lines.append(f"clips/{index}.wav,{label}")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["eval", str(model_file), "--data", str(tmp_path / "manifest.csv"), "--quiet",
                 "--json", str(tmp_path / "r.json"), "--latency-samples", "0"]) == 2
    assert "1.wav: only 100 samples" in one_line_error(capsys, "eval")


# ---------------------------------------------------------------------------------------------- settings


@pytest.mark.parametrize("setting", ["teacher.epochs=0", "teacher.epochs=-1", "teacher.batch_size=0",
                                     "teacher.unfreeze_epochs=0", "quant.kmeans_iterations=0"])
def test_every_count_is_validated_before_anything_runs(tmp_path, capsys, setting):
    assert main(["pretune", "--set", setting, "--out", str(tmp_path / "teacher")]) == 2
    assert setting.split("=")[0] in one_line_error(capsys, "pretune")
    assert not (tmp_path / "teacher").exists()


@pytest.mark.parametrize("setting", ["optim.epochs=[1", "seed=!!python/object/apply:os.system ['echo hacked']",
                                     "optim.lr={a: [}"])
def test_invalid_yaml_in_set_is_one_line_naming_the_setting(tmp_path, capsys, setting):
    assert main(["compress", "--set", setting, "--out", str(tmp_path / "run")]) == 2
    assert f"--set {setting}" in one_line_error(capsys, "compress")


def test_a_config_file_that_is_not_utf8_is_named(tmp_path, capsys):
    config = tmp_path / "recipe.yaml"
    config.write_bytes("optim:\n  lr: 0.01  # d\xe9j\xe0 vu\n".encode("latin-1"))
    assert main(["compress", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "recipe.yaml: not a UTF-8 text file" in one_line_error(capsys, "compress")


def test_a_config_file_with_a_yaml_error_is_one_line(tmp_path, capsys):
    config = tmp_path / "recipe.yaml"
    config.write_text("optim:\n  lr: [0.01\n", encoding="utf-8")
    assert main(["compress", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "recipe.yaml: not valid YAML" in one_line_error(capsys, "compress")


@pytest.mark.parametrize("raw", ["0123", "yes", "1e3", "null", "~"])
def test_string_settings_from_set_are_never_coerced(raw):
    # "~" stays a path (the home folder, expanded as a shell would), never YAML's null
    assert load_config(None, [f"data.path={raw}"]).data.path == os.path.expanduser(raw)


def test_a_string_setting_that_yaml_read_as_a_number_is_refused_with_a_hint(tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text("data:\n  path: 0123\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"data.path: expected a string, got 83; quote it"):
        load_config(config)


@pytest.mark.parametrize("setting", ["optim.weight_decay=-0.1", "optim.min_lr_ratio=-0.5", "optim.min_lr_ratio=2",
                                     "optim.warmup_epochs=-1", "optim.grad_clip=-1", "teacher.weight_decay=-1",
                                     "teacher.lr=0", "quant.centroid_weight=-1", "distill.logit_weight=-2",
                                     "optim.lr=.inf", "optim.head_lr=.nan", "seed=-1", "teacher.dropout=1.0"])
def test_numeric_settings_out_of_range_are_refused_naming_the_key(setting):
    with pytest.raises(ConfigError, match=setting.split("=")[0].replace(".", r"\.")):
        load_config(None, [setting])


# ---------------------------------------------------------------------------------------------- model files


def assert_refused(path: Path, field: str) -> None:
    with pytest.raises(ModelFileError, match=f"invalid model file: {field}"):
        load(path)


@pytest.mark.parametrize("key,value", [("sample_rate", "16000"), ("n_fft", 400.5), ("n_fft", 10**11),
                                       ("hop_length", 0), ("sample_rate", 8000), ("n_mels", 128), ("n_fft", True)])
def test_front_end_fields_are_checked_before_the_front_end_is_built(tmp_path, key, value):
    path = write_tiny_model(tmp_path / "m.quads",
                            metadata=altered_metadata(lambda m: m["frontend"].__setitem__(key, value)))
    assert_refused(path, f"frontend.{key}")


@pytest.mark.parametrize("labels", [LABELS[:2], [*LABELS, "extra"], [LABELS[0], LABELS[0], LABELS[1]],
                                    [1, 2, 3], "abc"])
def test_labels_must_be_one_distinct_string_per_output(tmp_path, labels):
    path = write_tiny_model(tmp_path / "m.quads", metadata=altered_metadata(lambda m: m.__setitem__("labels", labels)))
    assert_refused(path, "labels")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused(tmp_path, bad):
    float_state, _, _ = tiny_model_parts()
    name = next(name for name in float_state if name.endswith("bias"))
    float_state[name] = float_state[name].clone()
    float_state[name][0] = bad
    assert_refused(write_tiny_model(tmp_path / "m.quads", float_state=float_state), f"tensor '{name}'")


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool, torch.int64])
def test_integer_or_bool_tensors_where_floats_belong_are_refused(tmp_path, dtype):
    float_state, _, _ = tiny_model_parts()
    name = next(name for name in float_state if name.endswith("bias"))
    float_state[name] = float_state[name].to(dtype)
    assert_refused(write_tiny_model(tmp_path / "m.quads", float_state=float_state), f"tensor '{name}'")


def test_a_huge_architecture_is_refused_in_milliseconds_without_allocating(tmp_path):
    path = write_tiny_model(tmp_path / "m.quads", metadata=altered_metadata(
        lambda m: m["architecture"]["encoder"].update(stage_blocks=[100000], )))
    started = time.perf_counter()
    assert_refused(path, "architecture.encoder.stage_blocks")
    assert time.perf_counter() - started < 2.0


def test_an_architecture_over_the_parameter_budget_is_refused_before_it_is_built(tmp_path):
    def wide(metadata):
        metadata["architecture"]["encoder"].update(stage_channels=[4096], stem_channels=4096)
    path = write_tiny_model(tmp_path / "m.quads", metadata=altered_metadata(wide))
    with pytest.raises(ModelFileError, match="parameters, more than the 15,000,000"):
        load(path)


@pytest.mark.parametrize("change", [
    lambda m: m["architecture"]["encoder"].update(type="whisper"),
    lambda m: m["architecture"]["encoder"].update(kernel_size=4),
    lambda m: m["architecture"]["encoder"].update(stage_strides=[2, 2]),
    lambda m: m["architecture"].update(num_labels=2**40),
    lambda m: m["architecture"].update(head={"kind": "mlp", "hidden_dim": -5}),
    lambda m: m.update(bits="four"),
    lambda m: m.pop("frontend"),
])
def test_malformed_architecture_and_metadata_are_model_file_errors(tmp_path, change):
    path = write_tiny_model(tmp_path / "m.quads", metadata=altered_metadata(change))
    with pytest.raises(ModelFileError, match="invalid model file"):
        load(path)


def test_the_untouched_tiny_model_still_loads_and_predicts(model_file):
    model = load(model_file)
    (prediction,) = model.predict_waveforms([np.zeros(1600, dtype=np.float32)])
    assert prediction.label in LABELS and math.isfinite(prediction.confidence)


# ---------------------------------------------------------------------------------------------- warnings


def test_input_below_the_training_sample_rate_is_predicted_with_a_warning(model_file, tmp_path):
    wav = write_wav(tmp_path / "phone.wav", 8000, rate=8000)
    with pytest.warns(AudioWarning, match="8000 Hz, below the 16000 Hz"):
        load(model_file).predict_files([wav])


def test_a_clip_far_longer_than_training_clips_is_predicted_with_a_warning(model_file, tmp_path):
    wav = write_wav(tmp_path / "long.wav", 16000 * 31)
    with pytest.warns(AudioWarning, match="31 s long"):
        load(model_file).predict_files([wav])


def test_ordinary_audio_gives_no_warning(model_file, tmp_path):
    wav = write_wav(tmp_path / "ok.wav", 16000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AudioWarning)
        load(model_file).predict_files([wav])


def test_short_waveforms_given_in_memory_are_refused_too(model_file):
    with pytest.raises(AudioError, match="waveform 0: only 10 samples"):
        load(model_file).predict_waveforms([np.zeros(10, dtype=np.float32)])


# ---------------------------------------------------------------------------------------------- hints


def test_the_missing_audio_hint_names_the_config_key_and_the_cli_flag(tmp_path):
    from quads.data import open_corpus
    from quads.errors import DataError

    (tmp_path / "manifest.csv").write_text("path,label\nnowhere.wav,on\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"--set data.skip_missing_audio=true .*--skip-missing"):
        open_corpus(tmp_path / "manifest.csv")


def test_features_offers_the_drop_unknown_labels_flag_its_hint_names(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["features", "--help"])
    assert "--drop-unknown-labels" in capsys.readouterr().out
