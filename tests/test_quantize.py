"""Specification of model-level codebook quantization (quads.compression.quantize): selection, the per-step hooks of
quantization-aware training, stage edges, persistence and export."""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
from torch import nn

from quads.compression.quantize import CodebookQuantizer, post_training_quantize
from quads.compression.spec import QuantizationSpec, select_quantized_tensors
from quads.errors import ConfigError


class TinySLU(nn.Module):
    """Embedding + Conv1d + LayerNorm + Linear, like a miniature student."""

    def __init__(self, vocab: int = 40, width: int = 16, channels: int = 24, classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.conv = nn.Conv1d(width, channels, kernel_size=3, padding=1)
        self.norm = nn.LayerNorm(channels)
        self.head = nn.Linear(channels, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens).transpose(1, 2)  # [B, width, T]
        x = torch.relu(self.conv(x)).transpose(1, 2)  # [B, T, channels]
        return self.head(self.norm(x).mean(1))


def tiny_model(seed: int = 0) -> TinySLU:
    torch.manual_seed(seed)
    return TinySLU()


def tokens(seed: int = 0, batch: int = 8, length: int = 12) -> torch.Tensor:
    return torch.randint(0, 40, (batch, length), generator=torch.Generator().manual_seed(seed))


def step_loss(model: nn.Module, seed: int = 0) -> torch.Tensor:
    labels = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(seed + 100))
    return nn.functional.cross_entropy(model(tokens(seed)), labels)


def snapped_copy(model: nn.Module, quantizer: CodebookQuantizer) -> nn.Module:
    twin = copy.deepcopy(model)
    with quantizer.snapped():
        twin.load_state_dict(model.state_dict())
    return twin


# ------------------------------------------------------------------------------------------------ selection


def test_default_selection_takes_matrices_and_kernels_but_not_biases_or_norms():
    selected = select_quantized_tensors(tiny_model(), QuantizationSpec(bits=4))
    assert selected == {"embed.weight": 4, "conv.weight": 4, "head.weight": 4}


def test_per_layer_patterns_override_the_default_width_and_32_keeps_float():
    spec = QuantizationSpec(bits=4, per_layer={"embed.*": 3, "head.weight": 32, "conv.*": 16})
    assert select_quantized_tensors(tiny_model(), spec) == {"embed.weight": 3, "conv.weight": 16}


def test_min_bits_patterns_are_floors_that_never_narrow_a_tensor():
    spec = QuantizationSpec(bits=2, per_layer={"head.weight": 32}, min_bits={"embed.*": 4, "e*": 3, "head.*": 8})
    assert spec.bits_for("embed.weight") == 4  # the widest matching floor
    assert spec.bits_for("conv.weight") == 2
    assert spec.bits_for("head.weight") == 32  # kept float: a floor never narrows
    assert QuantizationSpec(bits=8, min_bits={"embed.*": 4}).bits_for("embed.weight") == 8
    with pytest.raises(ConfigError, match=r"min_bits\['embed\.\*'\]"):
        QuantizationSpec(min_bits={"embed.*": 5})


def test_excluded_patterns_stay_float():
    spec = QuantizationSpec(bits=2, exclude=["head.*"])
    assert "head.weight" not in select_quantized_tensors(tiny_model(), spec)


def test_a_tensor_too_small_for_its_codebook_stays_float_with_a_warning_naming_it():
    spec = QuantizationSpec(bits=8)  # needs 4 * 256 = 1024 weights; head.weight has 240, embed 640, conv 1152
    with pytest.warns(UserWarning) as record:
        selected = select_quantized_tensors(tiny_model(), spec)
    assert selected == {"conv.weight": 8}
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 2
    assert messages[0].startswith("embed.weight (640 weights) is too small for a 8-bit codebook")
    assert messages[1].startswith("head.weight (240 weights) is too small for a 8-bit codebook")


@pytest.mark.parametrize("bits", [0, 5, 7, 64])
def test_a_bad_bit_width_is_a_config_error(bits):
    with pytest.raises(ConfigError, match="unsupported bit width"):
        QuantizationSpec(bits=bits)
    with pytest.raises(ConfigError, match=r"per_layer\['conv\.\*'\]"):
        QuantizationSpec(per_layer={"conv.*": bits})


# ------------------------------------------------------------------------------------------------ stage edges


@pytest.mark.filterwarnings("ignore:head.weight")
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_after_hard_snap_each_tensor_has_at_most_two_to_the_b_distinct_values(bits):
    model = tiny_model()
    with torch.no_grad():
        model.norm.weight.copy_(torch.linspace(0.5, 1.5, model.norm.weight.numel()))
    norm_before = model.norm.weight.detach().clone()
    spec = QuantizationSpec(bits=bits, min_numel_per_centroid=1)
    quantizer = CodebookQuantizer(model, spec)
    quantizer.hard_snap()
    for name in quantizer.bits:
        assert model.get_parameter(name).unique().numel() <= 2**bits, name
    assert torch.equal(model.norm.weight, norm_before)  # norms untouched (not selected)


def test_hard_snap_with_sixteen_bits_rounds_to_float16():
    model = tiny_model()
    CodebookQuantizer(model, QuantizationSpec(bits=16)).hard_snap()
    assert torch.equal(model.conv.weight, model.conv.weight.half().float())


def test_parameters_and_state_dict_keys_are_unchanged():
    model = tiny_model()
    params_before = {name: id(p) for name, p in model.named_parameters()}
    keys_before = list(model.state_dict())
    quantizer = CodebookQuantizer(model, QuantizationSpec(bits=2))
    with quantizer.snapped():
        assert {name: id(p) for name, p in model.named_parameters()} == params_before
    quantizer.hard_snap()
    assert {name: id(p) for name, p in model.named_parameters()} == params_before
    assert list(model.state_dict()) == keys_before


def test_round_centroids_to_float16_makes_snapped_weights_float16_exact():
    model = tiny_model()
    quantizer = CodebookQuantizer(model, QuantizationSpec(bits=4))
    quantizer.round_centroids_to(torch.float16)
    quantizer.hard_snap()
    for name in quantizer.bits:
        weight = model.get_parameter(name)
        assert torch.equal(weight, weight.half().float())


def test_reassign_refits_codebooks_to_the_current_weights():
    model = tiny_model()
    quantizer = CodebookQuantizer(model, QuantizationSpec(bits=2))
    with torch.no_grad():
        model.conv.weight.mul_(3.0)
    quantizer.reassign()
    snapped = snapped_copy(model, quantizer)
    assert snapped.conv.weight.abs().max() > 2.0 * quantizer.centroids("conv.weight").abs().min()
    fresh = CodebookQuantizer(model, QuantizationSpec(bits=2))
    assert torch.equal(fresh.centroids("conv.weight"), quantizer.centroids("conv.weight"))


def test_post_training_quantization_snaps_without_retraining():
    model = tiny_model()
    original = copy.deepcopy(model)
    quantizer = post_training_quantize(model, QuantizationSpec(bits=3))
    assert model.conv.weight.unique().numel() <= 8
    assert torch.equal(model.conv.weight, model.conv.weight.half().float())  # centroids rounded to the file dtype
    assert torch.equal(model.conv.bias, original.conv.bias)
    error = (model.conv.weight - original.conv.weight).abs().max()
    assert 0 < error < (original.conv.weight.max() - original.conv.weight.min()) / 4
    assert quantizer.centroid_loss() == 0


# ------------------------------------------------------------------------------------------------ every step


def test_swap_in_and_restore_leave_the_latent_weights_bit_identical():
    model = tiny_model()
    quantizer = CodebookQuantizer(model, QuantizationSpec(bits=2, per_layer={"embed.*": 16}))
    before = copy.deepcopy(model.state_dict())
    quantizer.swap_in_snapped()
    assert model.conv.weight.unique().numel() <= 4
    assert not torch.equal(model.conv.weight, before["conv.weight"])
    quantizer.restore_latent()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_the_straight_through_gradient_is_the_gradient_at_the_snapped_weights():
    model = tiny_model()
    quantizer = CodebookQuantizer(model, QuantizationSpec(bits=2))
    reference = snapped_copy(model, quantizer)
    step_loss(reference).backward()

    quantizer.swap_in_snapped()
    step_loss(model).backward()
    quantizer.restore_latent()
    for (name, param), (_, expected) in zip(model.named_parameters(), reference.named_parameters(), strict=True):
        assert torch.equal(param.grad, expected.grad), name
    assert not torch.equal(model.conv.weight, reference.conv.weight)  # the latent weights came back


def test_add_centroid_gradient_matches_autograd_of_the_centroid_loss():
    model = tiny_model()
    quantizer = CodebookQuantizer(model, QuantizationSpec(bits=2, per_layer={"embed.*": 16}))
    codebook_names = ["conv.weight", "head.weight"]  # the 16-bit embedding has no centroid term
    variances = {name: model.get_parameter(name).detach().var(unbiased=False) for name in codebook_names}
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.01 * torch.randn_like(param))  # latent weights off their centroids
    leaves = {name: model.get_parameter(name).detach().clone().requires_grad_() for name in codebook_names}
    distances = {name: leaves[name] - quantizer.centroids(name)[quantizer.assignments(name)].view_as(leaves[name])
                 for name in codebook_names}
    expected_loss = torch.stack([distances[n].pow(2).sum() / variances[n] for n in codebook_names]).mean()
    expected_loss.backward()
    expected_spread = sum(float(distances[n].detach().pow(2).mean() / variances[n]) for n in codebook_names) / 2

    coefficient = 0.7
    for name, param in model.named_parameters():
        param.grad = torch.zeros_like(param) if name in codebook_names else torch.full_like(param, 0.5)
    spread = quantizer.add_centroid_gradient(coefficient)
    assert spread == pytest.approx(expected_spread, rel=1e-5)
    assert spread == pytest.approx(quantizer.latent_spread(), rel=1e-6)
    assert float(quantizer.centroid_loss()) == pytest.approx(float(expected_loss.detach()), rel=1e-5)
    for name in codebook_names:
        assert torch.allclose(model.get_parameter(name).grad, coefficient * leaves[name].grad, rtol=1e-5,
                              atol=1e-12), name
    assert torch.equal(model.embed.weight.grad, torch.full_like(model.embed.weight, 0.5))
    assert torch.equal(model.norm.weight.grad, torch.full_like(model.norm.weight, 0.5))


def test_the_centroid_pull_on_a_weight_ignores_its_tensors_size_and_scale():
    """Two tensors, one 100 times larger in scale and 16 times in size, at the same relative offset from
    their centroids: the pull relative to each tensor's spread is the same, and not a 1/numel sliver."""
    small, large = nn.Linear(8, 8, bias=False), nn.Linear(32, 32, bias=False)
    with torch.no_grad():
        large.weight.mul_(100.0)
    model = nn.Sequential(small, large)
    quantizer = CodebookQuantizer(model, QuantizationSpec(bits=2))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * param.std() * torch.randn_like(param))
    quantizer.add_centroid_gradient(1.0)
    relative = [float((param.grad * param.detach().std()).abs().mean()) for param in model.parameters()]
    assert relative[0] == pytest.approx(relative[1], rel=0.3)
    assert min(relative) > 0.01  # O(0.1 / T): comparable to a CE gradient, not 1e-6 of it


def test_reassign_to_nearest_moves_drifted_weights_and_keeps_at_most_2_to_the_b_values():
    model = tiny_model()
    quantizer = CodebookQuantizer(model, QuantizationSpec(bits=2))
    before = quantizer.assignments("conv.weight")
    with torch.no_grad():
        model.conv.weight.add_(0.5 * model.conv.weight.std() * torch.randn_like(model.conv.weight))
    centroids = quantizer.centroids("conv.weight")
    changed = quantizer.reassign_to_nearest()
    after = quantizer.assignments("conv.weight")
    assert 0 < changed < 1 and not torch.equal(before, after)
    distance = (model.conv.weight.detach().reshape(-1, 1) - centroids.reshape(1, -1)).abs()
    assert torch.equal(distance.gather(1, after.reshape(-1, 1)).squeeze(1), distance.min(1).values)
    weights = model.conv.weight.detach().reshape(-1)
    for cluster in after.unique().tolist():  # then each centroid is its new cluster's mean
        assert quantizer.centroids("conv.weight")[cluster] == pytest.approx(float(weights[after == cluster].mean()),
                                                                           rel=1e-5)
    quantizer.hard_snap()
    assert 2 <= model.conv.weight.unique().numel() <= 4


def test_a_larger_centroid_coefficient_leaves_a_smaller_latent_spread():
    spreads = []
    for coefficient in (0.0, 1.0):
        model, inputs, targets = toy_regression()
        quantizer = CodebookQuantizer(model, QuantizationSpec(bits=2))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        train_under_hooks(model, quantizer, optimizer, inputs, targets, steps=40, coefficient=coefficient)
        spreads.append(quantizer.latent_spread())
    assert spreads[1] < 0.5 * spreads[0]


def test_add_centroid_gradient_creates_missing_gradients():
    model = tiny_model()
    quantizer = CodebookQuantizer(model, QuantizationSpec(bits=2))
    with torch.no_grad():
        model.head.weight.add_(0.05)
    quantizer.add_centroid_gradient(1.0)
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0


def test_frozen_parameters_are_quantized_but_get_no_gradient():
    model = tiny_model()
    model.embed.weight.requires_grad_(False)
    quantizer = CodebookQuantizer(model, QuantizationSpec(bits=2))
    with torch.no_grad():
        model.embed.weight.add_(0.05)
    quantizer.add_centroid_gradient(1.0)
    assert "embed.weight" in quantizer.bits and model.embed.weight.grad is None
    quantizer.hard_snap()
    assert model.embed.weight.unique().numel() <= 4


def test_update_centroids_sets_each_centroid_to_the_mean_of_its_cluster():
    model = tiny_model()
    quantizer = CodebookQuantizer(model, QuantizationSpec(bits=3))
    with torch.no_grad():
        model.conv.weight.add_(0.01 * torch.randn_like(model.conv.weight))
    old = quantizer.centroids("conv.weight")
    quantizer.update_centroids()
    new = quantizer.centroids("conv.weight")
    weights, indices = model.conv.weight.detach().reshape(-1), quantizer.assignments("conv.weight")
    for cluster in range(8):
        members = weights[indices == cluster]
        expected = old[cluster] if members.numel() == 0 else members.double().mean().float()
        assert torch.allclose(new[cluster], expected, rtol=1e-6, atol=1e-9), cluster
    assert torch.equal(quantizer.assignments("conv.weight"), indices)  # assignments fixed within a stage


def test_hooks_refuse_to_run_in_the_wrong_order():
    quantizer = CodebookQuantizer(tiny_model(), QuantizationSpec(bits=2))
    with pytest.raises(RuntimeError, match="restore_latent"):
        quantizer.restore_latent()
    quantizer.swap_in_snapped()
    for action in (quantizer.swap_in_snapped, quantizer.update_centroids, quantizer.hard_snap,
                   quantizer.reassign, quantizer.state_dict):
        with pytest.raises(RuntimeError, match="swapped in"):
            action()
    quantizer.restore_latent()


def train_under_hooks(model: nn.Module, quantizer: CodebookQuantizer, optimizer: torch.optim.Optimizer,
                      inputs: torch.Tensor, targets: torch.Tensor, steps: int,
                      coefficient: float = 1.0) -> list[float]:
    losses = []
    for _ in range(steps):
        quantizer.swap_in_snapped()
        loss = nn.functional.mse_loss(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        quantizer.restore_latent()
        quantizer.add_centroid_gradient(coefficient)
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        quantizer.update_centroids()
        losses.append(float(loss.detach()))
    return losses


def toy_regression(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(256, 16, generator=generator)
    targets = torch.tanh(inputs @ torch.randn(16, 4, generator=generator)) @ torch.randn(4, 2, generator=generator)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 2))
    return model, inputs, targets


def test_training_under_the_hooks_recovers_what_post_training_quantization_loses():
    model, inputs, targets = toy_regression()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(200):  # a float (distillation-like) stage first: QAT starts from trained weights
        loss = nn.functional.mse_loss(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    ptq_model = copy.deepcopy(model)
    post_training_quantize(ptq_model, QuantizationSpec(bits=3))
    with torch.no_grad():
        ptq_loss = float(nn.functional.mse_loss(ptq_model(inputs), targets))

    quantizer = CodebookQuantizer(model, QuantizationSpec(bits=3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    losses = train_under_hooks(model, quantizer, optimizer, inputs, targets, steps=150)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[0] == pytest.approx(ptq_loss, rel=0.05)  # the first forward pass sees the PTQ weights
    quantizer.hard_snap()
    for name in quantizer.bits:
        assert model.get_parameter(name).unique().numel() <= 8
    with torch.no_grad():
        qat_loss = float(nn.functional.mse_loss(model(inputs), targets))
    assert qat_loss < 0.8 * ptq_loss


def test_state_dict_round_trip_resumes_bit_exactly():
    model, inputs, targets = toy_regression(seed=1)
    quantizer = CodebookQuantizer(model, QuantizationSpec(bits=3, per_layer={"0.*": 16}))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    train_under_hooks(model, quantizer, optimizer, inputs, targets, steps=20)

    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "quantizer": quantizer.state_dict()}, buffer)
    train_under_hooks(model, quantizer, optimizer, inputs, targets, steps=15)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_model, _, _ = toy_regression(seed=99)
    resumed_model.load_state_dict(saved["model"])
    resumed_optimizer = torch.optim.AdamW(resumed_model.parameters(), lr=1e-2)
    resumed_optimizer.load_state_dict(saved["optimizer"])
    resumed = CodebookQuantizer(resumed_model, QuantizationSpec(bits=1), fit=False)
    resumed.load_state_dict(saved["quantizer"])
    train_under_hooks(resumed_model, resumed, resumed_optimizer, inputs, targets, steps=15)

    assert resumed.bits == quantizer.bits
    for (name, a), (_, b) in zip(model.named_parameters(), resumed_model.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    for name, bits in quantizer.bits.items():
        if bits != 16:
            assert torch.equal(quantizer.centroids(name), resumed.centroids(name)), name
            assert torch.equal(quantizer.assignments(name), resumed.assignments(name)), name


def test_loading_a_state_for_another_model_is_a_config_error():
    state = CodebookQuantizer(tiny_model(), QuantizationSpec(bits=2)).state_dict()
    other, _, _ = toy_regression()
    with pytest.raises(ConfigError, match="does not have"):
        CodebookQuantizer.from_state_dict(other, state)


# ------------------------------------------------------------------------------------------------ export


def test_export_gives_uint8_indices_float32_codebooks_and_float16_values():
    model = tiny_model()
    quantizer = CodebookQuantizer(model, QuantizationSpec(bits=3, per_layer={"embed.*": 16}))
    quantizer.hard_snap()
    exported = quantizer.export()
    assert set(exported) == {"embed.weight", "conv.weight", "head.weight"}
    conv = exported["conv.weight"]
    assert conv.bits == 3 and conv.shape == (24, 16, 3)
    assert conv.indices.dtype == torch.uint8 and conv.indices.shape == (24 * 16 * 3,)
    assert conv.centroids.dtype == torch.float32 and conv.centroids.shape == (8,)
    assert torch.equal(conv.dequantize(), model.conv.weight)
    embed = exported["embed.weight"]
    assert embed.bits == 16 and embed.centroids is None and embed.values.dtype == torch.float16
    assert torch.equal(embed.dequantize(), model.embed.weight)


def test_summary_counts_parameters_per_width_and_the_theoretical_size():
    model = tiny_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantizer = CodebookQuantizer(model, QuantizationSpec(bits=2, per_layer={"embed.*": 16}))
    summary = quantizer.summary()
    assert summary["quantized_tensors"] == 3
    assert summary["params_by_bits"] == {2: 1152 + 240, 16: 640}
    float_values = 24 + 24 + 24 + 10  # conv bias, norm weight and bias, head bias
    assert summary["float_remainder_elements"] == float_values
    assert summary["theoretical_bytes"] == (1152 * 2 // 8 + 2 * 4) + (240 * 2 // 8 + 2 * 4) + 2 * 640 + 4 * float_values


# ------------------------------------------------------------------------------------------------ group codebooks


def test_groups_of_rows_get_their_own_codebooks_through_training_resume_and_export():
    model, inputs, targets = toy_regression(seed=3)
    with torch.no_grad():  # rows of very different scales, where one codebook per tensor fits badly
        for param in model.parameters():
            if param.ndim == 2:
                param.mul_(torch.logspace(-2, 0.5, param.shape[0])[:, None])
    spec = QuantizationSpec(bits=2, weights_per_centroid=8)  # groups of about 32 weights: whole rows
    grouped = CodebookQuantizer(copy.deepcopy(model), spec)
    whole = CodebookQuantizer(copy.deepcopy(model), QuantizationSpec(bits=2))
    assert grouped.latent_spread() < 0.75 * whole.latent_spread()

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    quantizer = CodebookQuantizer(model, spec)
    train_under_hooks(model, quantizer, optimizer, inputs, targets, steps=10)
    assert quantizer.reassign_to_nearest() >= 0.0
    saved = io.BytesIO()
    torch.save(quantizer.state_dict(), saved)
    saved.seek(0)
    resumed = CodebookQuantizer.from_state_dict(model, torch.load(saved, weights_only=True))
    quantizer.hard_snap()
    exported = quantizer.export()
    for name, tensor in exported.items():
        assert torch.equal(resumed.centroids(name), quantizer.centroids(name))
        assert torch.equal(resumed.assignments(name), quantizer.assignments(name))
        assert tensor.groups > 1 and tensor.centroids.numel() == tensor.groups * 4
        assert int(tensor.indices.max()) < 4 and tensor.indices.dtype == torch.uint8
        assert torch.equal(tensor.dequantize(), dict(model.named_parameters())[name].detach())
    codebook_bytes = sum(2 * tensor.centroids.numel() for tensor in exported.values())
    assert grouped.summary()["theoretical_bytes"] - whole.summary()["theoretical_bytes"] == \
        codebook_bytes - 2 * 4 * len(exported)
