"""optim.precision: bf16 autocast for training steps where it is fast, float32 everywhere else."""

from dataclasses import replace

import pytest
import torch
from tests.helpers.toy import ToyClassifier, toy_examples
from tests.test_grid_cells import fake_prepared

import quads.training.precision as precision_module
from quads.commands.compress import run_fingerprint
from quads.compression.quantize import CodebookQuantizer
from quads.compression.spec import QuantizationSpec
from quads.config import OptimConfig, load_config
from quads.errors import ConfigError
from quads.training.loop import Stage, fit
from quads.training.losses import LossWeights, ce_weights
from quads.training.precision import forward_precision, resolve_precision


def test_auto_means_bf16_only_where_the_hardware_multiplies_it(monkeypatch):
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    monkeypatch.setattr(precision_module, "native_bf16", lambda device: False)
    assert resolve_precision("auto") == "fp32"
    monkeypatch.setattr(precision_module, "native_bf16", lambda device: True)
    assert resolve_precision("auto") == "bf16"
    with pytest.raises(ConfigError, match="fp32, bf16, auto"):
        resolve_precision("fp16")


def test_a_precision_typo_fails_when_the_config_loads():
    with pytest.raises(ConfigError, match=r"optim\.precision"):
        load_config(None, ["optim.precision=fp16"])


def test_the_forward_runs_in_bf16_only_when_asked():
    layer, inputs = torch.nn.Linear(8, 4), torch.randn(2, 8)
    with forward_precision("bf16", inputs.device):
        assert layer(inputs).dtype == torch.bfloat16
    with forward_precision("fp32", inputs.device):
        assert layer(inputs).dtype == torch.float32
    assert layer.weight.dtype == torch.float32


def test_a_bf16_fit_learns_and_keeps_float32_weights_on_the_codebook(tmp_path):
    optim = OptimConfig(epochs=3, batch_size=16, lr=1e-2, head_lr=0.0, warmup_epochs=0.5, spec_augment=False,
                        precision="bf16")
    stages = [Stage("ce", 2, ce_weights()), Stage("quantize", 2, LossWeights(ce=1.0, centroid=1.0), quantize=True)]
    torch.manual_seed(0)
    model = ToyClassifier()
    result = fit(model, toy_examples(96, 0), toy_examples(30, 1), stages, optim, tmp_path, seed=3,
                 quantizer_factory=lambda m: CodebookQuantizer(m, QuantizationSpec(bits=2), fit=False),
                 progress=False)
    losses = [row["train_loss"] for row in result.history]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert result.best_valid_accuracy > 0.5
    weight = result.model_state["conv.weight"]
    assert weight.dtype == torch.float32 and weight.unique().numel() <= 4


def test_float32_steps_keep_the_fingerprints_of_earlier_runs_and_bf16_gets_its_own(monkeypatch):
    prepared, config = fake_prepared(), load_config(None)
    fp32 = run_fingerprint(config, "quads", prepared)
    bf16_config = replace(config, optim=replace(config.optim, precision="bf16"))
    auto_config = replace(config, optim=replace(config.optim, precision="auto"))
    assert run_fingerprint(bf16_config, "quads", prepared) != fp32
    monkeypatch.setattr(precision_module, "native_bf16", lambda device: False)
    assert run_fingerprint(auto_config, "quads", prepared) == fp32
    monkeypatch.setattr(precision_module, "native_bf16", lambda device: True)
    assert run_fingerprint(auto_config, "quads", prepared) == run_fingerprint(bf16_config, "quads", prepared)
