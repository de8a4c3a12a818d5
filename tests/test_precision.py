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
from quads.training.precision import forward_precision, precision_note, resolve_precision


def test_auto_means_bf16_only_where_the_hardware_multiplies_it(monkeypatch):
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    monkeypatch.setattr(precision_module, "native_bf16", lambda device: False)
    assert resolve_precision("auto") == "fp32"
    monkeypatch.setattr(precision_module, "native_bf16", lambda device: True)
    assert resolve_precision("auto") == "bf16"
    assert precision_note("auto").startswith("training steps: bf16")
    monkeypatch.setattr(precision_module, "native_bf16", lambda device: False)
    assert "no AMX" in precision_note("auto") and precision_note("fp32").startswith("training steps: float32")
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
    prepared, config = fake_prepared(), load_config(None, ["optim.precision=fp32"])
    fp32 = run_fingerprint(config, "quads", prepared)
    bf16_config = replace(config, optim=replace(config.optim, precision="bf16"))
    auto_config = replace(config, optim=replace(config.optim, precision="auto"))
    assert run_fingerprint(bf16_config, "quads", prepared) != fp32
    monkeypatch.setattr(precision_module, "native_bf16", lambda device: False)
    assert run_fingerprint(auto_config, "quads", prepared) == fp32
    monkeypatch.setattr(precision_module, "native_bf16", lambda device: True)
    assert run_fingerprint(auto_config, "quads", prepared) == run_fingerprint(bf16_config, "quads", prepared)


def test_padding_a_batch_to_a_shape_bucket_changes_no_real_frame():
    from quads.models.whisper import WhisperTeacherEncoder
    from quads.training.batches import Batch
    from quads.training.precision import shape_bucketed

    torch.manual_seed(0)
    encoder = WhisperTeacherEncoder.from_size("tiny", encoder_layers=1, max_source_positions=40).eval()
    mask = torch.ones(2, 37, dtype=torch.bool)
    mask[1, 25:] = False
    batch = Batch(torch.randn(2, 80, 37) * mask[:, None], mask, torch.tensor([0, 1]), torch.tensor([0, 1]))
    padded = shape_bucketed(batch, time_axis=2, max_frames=80, multiple=32)
    assert padded.inputs.shape == (2, 80, 64) and padded.mask.shape == (2, 64)
    assert padded.mask[:, 37:].any().item() is False and torch.equal(padded.mask[:, :37], mask)
    assert shape_bucketed(batch, time_axis=2, max_frames=50, multiple=32).inputs.shape[-1] == 50  # never too long
    assert shape_bucketed(padded, time_axis=2).inputs is padded.inputs  # already on a bucket
    with torch.no_grad():
        frames, frame_mask = encoder(batch.inputs, batch.mask)
        longer, longer_mask = encoder(padded.inputs, padded.mask)
    real = frame_mask
    assert torch.equal(longer_mask[:, : real.shape[1]], real)
    assert torch.allclose(longer[:, : real.shape[1]][real], frames[real], atol=1e-5)
    time_first = Batch(torch.randn(2, 37, 8), mask, batch.labels, batch.index)
    assert shape_bucketed(time_first, time_axis=1).inputs.shape == (2, 64, 8)
