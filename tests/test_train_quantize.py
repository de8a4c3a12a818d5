"""fit() through quantize stages: best-epoch selection, hard snaps, the latent spread, resume and bad input."""

import pytest
import torch
from tests.helpers.interrupt import interrupt_after_epoch
from tests.helpers.toy import ToyClassifier, toy_examples

import quads.training.loop as train_module
from quads.compression.quantize import CodebookQuantizer
from quads.compression.spec import QuantizationSpec
from quads.config import OptimConfig
from quads.errors import ConfigError
from quads.training.checkpoints import load_checkpoint
from quads.training.loop import Stage, fit
from quads.training.losses import LossWeights, ce_weights

OPTIM = OptimConfig(epochs=4, batch_size=16, lr=1e-2, head_lr=0.0, warmup_epochs=0.5, spec_augment=False)
BITS = 2
QUANTIZED = ("conv.weight", "head.weight")


def quantize_stage(epochs: int, centroid: float = 1.0) -> Stage:
    return Stage("quantize", epochs, LossWeights(ce=1.0, centroid=centroid), quantize=True)


def _fit(run_dir, stages, *, resume=False, settings=None, fingerprint="a"):
    torch.manual_seed(0)
    model = ToyClassifier()
    result = fit(model, toy_examples(96, 0), toy_examples(30, 1), stages, OPTIM, run_dir, seed=3,
                 quantizer_factory=lambda m: CodebookQuantizer(m, QuantizationSpec(bits=BITS), fit=False),
                 fingerprint=fingerprint, resume=resume, progress=False, settings=settings)
    return model, result


def distinct_values(state: dict, name: str) -> int:
    return state[name].unique().numel()


def test_a_quantized_fit_selects_its_best_epoch_in_the_last_stage_and_ends_on_the_codebook(tmp_path):
    stages = [Stage("ce", 2, ce_weights()), quantize_stage(2), Stage("ce", 1, ce_weights()), quantize_stage(3)]
    model, result = _fit(tmp_path, stages)
    last_stage = [row for row in result.history if row["stage_index"] == 3]
    # the most accurate epoch; among equally accurate ones, the lowest valid loss
    best = max(last_stage, key=lambda row: (row["valid_accuracy"], -row["valid_loss"]))
    assert result.best_epoch == best["epoch"] and result.best_epoch >= 6
    assert result.best_valid_accuracy == best["valid_accuracy"]
    for name in QUANTIZED:
        assert 2 <= distinct_values(result.model_state, name) <= 2**BITS, name
        assert torch.equal(model.state_dict()[name], result.model_state[name])
    assert distinct_values(result.model_state, "conv.bias") > 2**BITS  # biases stay float
    quantize_rows = [row for row in result.history if row["stage"] == "quantize"]
    assert all(row["latent_spread"] > 0 for row in quantize_rows)
    assert all("latent_spread" not in row for row in result.history if row["stage"] == "ce")
    assert [("reassigned" in row) for row in quantize_rows] == [True, False, True, True, False]
    assert result.quantizer_state is not None


def test_equally_accurate_epochs_are_told_apart_by_their_valid_loss():
    model = ToyClassifier()
    first = train_module.best_so_far(None, 0, 0.9, model, None, valid_loss=0.5)
    assert train_module.best_so_far(first, 1, 0.9, model, None, valid_loss=0.6) is first
    later = train_module.best_so_far(first, 2, 0.9, model, None, valid_loss=0.4)
    assert later["epoch"] == 3 and later["valid_loss"] == 0.4
    assert train_module.best_so_far(later, 3, 0.8, model, None, valid_loss=0.1) is later  # accuracy comes first
    assert train_module.best_so_far(later, 4, 0.95, model, None, valid_loss=0.9)["epoch"] == 5
    resumed = {key: value for key, value in first.items() if key != "valid_loss"}  # a checkpoint from before
    assert train_module.best_so_far(resumed, 1, 0.9, model, None, valid_loss=0.6)["epoch"] == 2


def test_the_stage_after_a_quantize_stage_starts_from_the_snapped_weights(tmp_path, monkeypatch):
    interrupt_after_epoch(monkeypatch, 3)  # the end of the first quantize stage
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path, [Stage("ce", 1, ce_weights()), quantize_stage(2), Stage("ce", 1, ce_weights()),
                        quantize_stage(1)])
    module = load_checkpoint(tmp_path / "last.pt")["module"]
    for name in QUANTIZED:
        assert distinct_values(module, f"classifier.{name}") <= 2**BITS, name


def test_resume_in_the_middle_of_a_quantize_stage_is_bit_identical(tmp_path, monkeypatch):
    stages = [Stage("ce", 1, ce_weights()), quantize_stage(3)]
    _, uninterrupted = _fit(tmp_path / "full", stages)
    real_write = interrupt_after_epoch(monkeypatch, 3)  # inside the quantize stage
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "killed", stages)
    monkeypatch.setattr(train_module, "write_metrics_csv", real_write)
    _, resumed = _fit(tmp_path / "killed", stages, resume=True)
    for key, value in uninterrupted.model_state.items():
        assert torch.equal(value, resumed.model_state[key]), key
    for key in ("centroids", "indices", "variances"):
        for name, value in uninterrupted.quantizer_state[key].items():
            assert torch.equal(value, resumed.quantizer_state[key][name]), (key, name)
    assert uninterrupted.history == resumed.history


def test_resume_from_a_run_with_another_centroid_coefficient_names_the_key(tmp_path):
    stages = [quantize_stage(1)]
    _fit(tmp_path, stages, settings={"quant": {"centroid_weight": 1.0, "gamma": 0.5}}, fingerprint="a")
    with pytest.raises(ConfigError, match=r"quant\.centroid_weight: 1\.0 there, 0\.1 here"):
        _fit(tmp_path, stages, resume=True, settings={"quant": {"centroid_weight": 0.1, "gamma": 0.5}},
             fingerprint="b")


def test_the_centroid_coefficient_changes_the_trained_codebook_and_shrinks_the_spread(tmp_path):
    """The review's toy found lambda = 0, 1 and 1000 gave the same centroids; now the term must act."""
    results = {}
    for centroid in (0.0, 1.0):
        _, results[centroid] = _fit(tmp_path / str(centroid), [Stage("ce", 1, ce_weights()),
                                                                quantize_stage(3, centroid)])
    spreads = {c: [row["latent_spread"] for row in r.history if row["stage"] == "quantize"] for c, r in results.items()}
    assert all(strong < 0.5 * weak for strong, weak in zip(spreads[1.0], spreads[0.0], strict=True))
    assert not torch.equal(results[0.0].model_state["conv.weight"], results[1.0].model_state["conv.weight"])
