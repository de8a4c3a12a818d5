from dataclasses import replace
from pathlib import Path

import pytest

from quads.config import RunConfig, load_config, parse_schedule, save_config, scale_epochs
from quads.errors import ConfigError


def test_defaults_load_without_a_file():
    config = load_config(None)
    assert isinstance(config, RunConfig)
    assert config.quant.bits == 4


def test_the_documented_default_yaml_is_the_built_in_default():
    default_yaml = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
    assert load_config(default_yaml, []).to_dict() == load_config(None, []).to_dict()


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", sorted(path.name for path in CONFIGS.glob("*.yaml")))
def test_every_shipped_config_loads(name):
    config = load_config(CONFIGS / name, [])
    assert config.student.encoder and config.teacher.spec


def test_yaml_values_and_overrides_are_applied(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("seed: 7\ndistill:\n  alpha: 0.25\nquant:\n  schedule: [[distill, 2], [quantize, 3]]\n")
    config = load_config(path, overrides=["optim.epochs=5", "quant.bits=2"])
    assert (config.seed, config.distill.alpha, config.optim.epochs, config.quant.bits) == (7, 0.25, 5, 2)
    assert parse_schedule(config.quant.schedule) == [("distill", 2), ("quantize", 3)]


def test_a_typo_in_a_key_names_it_and_suggests_the_closest(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("distill:\n  alpah: 0.5\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'distill.alpah'.*did you mean 'alpha'"):
        load_config(path)


def test_a_typo_in_a_section_is_reported(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optimm:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match="did you mean 'optim'"):
        load_config(path)


def test_wrong_types_and_values_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"optim\.epochs: expected an integer"):
        load_config(None, overrides=["optim.epochs=many"])
    with pytest.raises(ConfigError, match="alpha must be in"):
        load_config(None, overrides=["distill.alpha=1.5"])
    with pytest.raises(ConfigError, match=r"quant\.bits: unsupported bit width 5"):
        load_config(None, overrides=["quant.bits=5"])


def test_unknown_schedule_phase_is_rejected():
    with pytest.raises(ConfigError, match="did you mean 'quantize'"):
        parse_schedule([["quantise", 3]])


def test_saved_config_loads_back_identically(tmp_path):
    config = load_config(None, overrides=["seed=3", "quant.per_layer={'head.*': 8}"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config
    assert load_config(tmp_path / "config.yaml").fingerprint() == config.fingerprint()


def test_numbers_in_exponent_form_are_numbers():
    config = load_config(None, overrides=["optim.lr=1e-4", "optim.head_lr=5E-4"])
    assert config.optim.lr == 1e-4 and config.optim.head_lr == 5e-4
    with pytest.raises(ConfigError, match=r"optim\.lr: expected a number"):
        load_config(None, overrides=["optim.lr=fast"])


@pytest.mark.parametrize(("override", "key"), [
    ("quant.gamma=1.5", "quant.gamma"), ("quant.gamma=-0.1", "quant.gamma"),
    ("quant.centroid_weight=-1", "quant.centroid_weight"), ("distill.alpha=2", "distill.alpha"),
    ("quant.schedule=[[distill, 0], [quantize, 2]]", r"quant.schedule\[0\]"),
    ("quant.schedule=[[distill, 2], []]", r"quant.schedule\[1\]"),
    ("optim.frequency_warp=0.5", "optim.frequency_warp"), ("optim.frequency_warp=-0.1", "optim.frequency_warp"),
])
def test_out_of_range_coefficients_and_empty_stages_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, [override])


def test_fit_refuses_a_stage_without_epochs(tmp_path):
    from tests.helpers.toy import ToyClassifier, toy_examples

    from quads.config import OptimConfig
    from quads.training.loop import Stage, fit
    from quads.training.losses import ce_weights

    with pytest.raises(ConfigError, match=r"stage 1 .*0 epochs"):
        fit(ToyClassifier(), toy_examples(16, 0), toy_examples(8, 1),
            [Stage("ce", 1, ce_weights()), Stage("quantize", 0, ce_weights(), quantize=True)],
            OptimConfig(batch_size=8), tmp_path, progress=False, quantizer_factory=lambda m: None)


def test_set_below_a_plain_setting_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"--set seed\.x=1: 'seed' is a setting, not a section, so 'seed\.x'"):
        load_config(None, ["seed.x=1"])
    with pytest.raises(ConfigError, match=r"'distill\.alpha\.x' does not exist"):
        load_config(None, ["distill.alpha.x=1"])
    assert load_config(None, ["quant.per_layer.conv1=8"]).quant.per_layer["conv1"] == 8  # a mapping takes any key


def test_a_home_relative_data_path_is_the_same_config_as_its_expansion():
    home = Path.home()
    tilde = load_config(None, ["data.path=~/corpora/digits", "data.cache_dir=~/cache"])
    expanded = load_config(None, [f"data.path={home / 'corpora/digits'}", f"data.cache_dir={home / 'cache'}"])
    assert tilde.data.path == str(home / "corpora" / "digits") and tilde.data.cache_dir == str(home / "cache")
    assert tilde.fingerprint() == expanded.fingerprint()  # a finished run is reused whichever way it is spelled
    assert load_config(None).data.path == ""  # empty still means the built-in corpus
    assert replace(expanded.data, path="~/corpora/digits").path == expanded.data.path  # not only through YAML


def test_scale_epochs_multiplies_every_training_length_but_not_the_warm_up():
    config = load_config(None, ["quant.schedule=[[distill, 1], [quantize, 3]]", "quant.low_bit_epochs=0"])
    scaled = scale_epochs(config, 2)
    assert (scaled.teacher.epochs, scaled.optim.epochs, scaled.quant.epochs) == (
        2 * config.teacher.epochs, 2 * config.optim.epochs, 2 * config.quant.epochs)
    assert scaled.quant.schedule == [["distill", 2], ["quantize", 6]]
    assert scaled.quant.low_bit_epochs == 0  # still "as quant.epochs"
    assert scaled.optim.warmup_epochs == config.optim.warmup_epochs
    assert scaled.teacher.unfreeze_epochs == config.teacher.unfreeze_epochs
    assert scale_epochs(config, 1) == config
