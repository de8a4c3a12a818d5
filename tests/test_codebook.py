"""Specification of the tensor-level codebook primitives (quads.compression.codebook)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quads.compression.codebook import (
    CODEBOOK_BITS,
    QuantizedTensor,
    assign_to_codebook,
    assign_to_group_codebooks,
    dequantize,
    fit_codebook,
    fit_group_codebooks,
    group_length,
    kmeans_objective,
    pack_indices,
    packed_size,
    snap_to_codebook,
    unpack_indices,
    update_centroids,
    validate_bits,
)
from quads.errors import ConfigError

finite_floats = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_subnormal=False, width=32)
value_lists = st.lists(finite_floats, min_size=1, max_size=300)
codebook_bits = st.sampled_from(CODEBOOK_BITS)


def gaussian(numel: int, seed: int = 0, scale: float = 0.02) -> torch.Tensor:
    return torch.randn(numel, generator=torch.Generator().manual_seed(seed)) * scale


# ------------------------------------------------------------------------------------------------ bit widths


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8, 16, 32])
def test_supported_bit_widths_are_accepted(bits):
    assert validate_bits(bits) == bits


@pytest.mark.parametrize("bits", [0, 5, 6, 7, 12, 64, -1, True, 4.0, "4"])
def test_unsupported_bit_width_is_a_config_error_listing_the_supported_ones(bits):
    with pytest.raises(ConfigError, match=r"1, 2, 3, 4, 8.*16.*32"):
        validate_bits(bits)


@pytest.mark.parametrize("bits", [16, 32])
def test_float_widths_have_no_codebook_to_fit(bits):
    with pytest.raises(ConfigError, match="no codebook"):
        fit_codebook(torch.randn(100), bits)


# ------------------------------------------------------------------------------------------------ fitting


def test_two_bit_codebook_has_at_most_four_values():
    values = gaussian(5000).reshape(50, 100)
    codebook = fit_codebook(values, 2)
    snapped = codebook.dequantize()
    assert snapped.shape == values.shape
    assert codebook.centroids.shape == (4,)
    assert snapped.unique().numel() <= 4


@settings(max_examples=60, deadline=None)
@given(values=value_lists, bits=codebook_bits)
def test_b_bit_snapped_tensor_has_at_most_two_to_the_b_distinct_values(values, bits):
    tensor = torch.tensor(values)
    codebook = fit_codebook(tensor, bits)
    assert codebook.dequantize().unique().numel() <= 2**bits
    assert snap_to_codebook(tensor, codebook.centroids).unique().numel() <= 2**bits


@settings(max_examples=60, deadline=None)
@given(values=value_lists, bits=codebook_bits)
def test_snapping_is_idempotent(values, bits):
    tensor = torch.tensor(values)
    centroids = fit_codebook(tensor, bits).centroids
    once = snap_to_codebook(tensor, centroids)
    assert torch.equal(snap_to_codebook(once, centroids), once)


@settings(max_examples=60, deadline=None)
@given(values=value_lists, bits=codebook_bits)
def test_fitted_indices_point_to_the_nearest_centroid(values, bits):
    tensor = torch.tensor(values, dtype=torch.float64)
    codebook = fit_codebook(tensor, bits)
    distances = (tensor[:, None] - codebook.centroids.double()[None, :]).abs()
    chosen = distances.gather(1, codebook.indices.long()[:, None]).squeeze(1)
    assert torch.equal(chosen, distances.min(1).values)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(finite_floats, min_size=2, max_size=400), bits=codebook_bits)
def test_kmeans_objective_never_increases_across_iterations(values, bits):
    history: list[float] = []
    fit_codebook(torch.tensor(values), bits, iterations=50, history=history)
    assert history and all(math.isfinite(h) for h in history)
    scale = sum(v * v for v in values) * 1e-12 + 1e-30
    assert all(later <= earlier + scale for earlier, later in itertools.pairwise(history))


def test_kmeans_objective_decreases_on_gaussian_weights():
    history: list[float] = []
    fit_codebook(gaussian(20000), 4, iterations=25, history=history)
    assert len(history) > 2
    assert history[-1] < history[0]


@settings(max_examples=40, deadline=None)
@given(values=value_lists, bits=codebook_bits)
def test_fitting_is_deterministic_and_ignores_the_order_of_values(values, bits):
    tensor = torch.tensor(values)
    first, second = fit_codebook(tensor, bits), fit_codebook(tensor.clone(), bits)
    assert torch.equal(first.centroids, second.centroids)
    assert torch.equal(first.indices, second.indices)
    reversed_fit = fit_codebook(tensor.flip(0), bits)
    assert torch.equal(reversed_fit.centroids, first.centroids)


def test_centroids_are_sorted_float32_and_indices_uint8():
    codebook = fit_codebook(gaussian(3000), 3)
    assert codebook.centroids.dtype == torch.float32
    assert codebook.indices.dtype == torch.uint8
    assert bool((codebook.centroids[1:] >= codebook.centroids[:-1]).all())


def test_tensor_with_fewer_distinct_values_than_centroids_is_represented_exactly():
    values = torch.tensor([0.5, -1.0, 0.5, 2.0, -1.0, 0.5, 3.25])
    codebook = fit_codebook(values, 3)
    assert torch.equal(codebook.dequantize(), values)
    assert kmeans_objective(values, codebook.indices, codebook.centroids) == 0.0
    assert set(codebook.centroids.tolist()) == {-1.0, 0.5, 2.0, 3.25}


@pytest.mark.parametrize("bits", CODEBOOK_BITS)
def test_constant_tensor_gets_a_codebook_without_nan(bits):
    values = torch.full((7, 9), 0.125)
    codebook = fit_codebook(values, bits)
    assert bool(torch.isfinite(codebook.centroids).all())
    assert torch.equal(codebook.dequantize(), values)


def test_heavy_ties_still_use_every_centroid_without_nan():
    values = torch.cat([torch.zeros(1000), torch.arange(1, 9, dtype=torch.float32)])
    codebook = fit_codebook(values, 2)
    assert bool(torch.isfinite(codebook.centroids).all())
    assert codebook.centroids.unique().numel() == 4
    assert abs(float(codebook.centroids[0])) < 0.01


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_half_precision_inputs_are_fitted_in_float32(dtype):
    values = gaussian(2000).to(dtype)
    codebook = fit_codebook(values, 4)
    assert codebook.centroids.dtype == torch.float32
    assert snap_to_codebook(values, codebook.centroids).dtype == dtype
    assert codebook.dequantize().unique().numel() <= 16


def test_non_finite_values_are_refused_with_a_clear_message():
    values = gaussian(100)
    values[3] = float("nan")
    with pytest.raises(ValueError, match="NaN/Inf"):
        fit_codebook(values, 4)


def test_fit_reaches_a_lloyd_fixed_point():
    values = gaussian(4000, seed=3)
    codebook = fit_codebook(values, 3, iterations=1000)
    assert torch.equal(assign_to_codebook(values, codebook.centroids).to(torch.uint8), codebook.indices)
    refreshed = update_centroids(values, codebook.indices, codebook.centroids)
    assert torch.allclose(refreshed, codebook.centroids, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_fitted_codebook_beats_a_uniform_grid_on_gaussian_weights(bits):
    values = gaussian(50000, seed=1)
    codebook = fit_codebook(values, bits)
    grid = torch.linspace(float(values.min()), float(values.max()), 2**bits)
    grid_objective = kmeans_objective(values, assign_to_codebook(values, grid), grid)
    assert kmeans_objective(values, codebook.indices, codebook.centroids) < 0.8 * grid_objective


# ------------------------------------------------------------------------------------------------ primitives


def test_assignment_handles_unsorted_centroids():
    centroids = torch.tensor([1.0, -1.0, 0.0])
    values = torch.tensor([[-0.9, 0.2], [0.8, 5.0]])
    indices = assign_to_codebook(values, centroids)
    assert indices.shape == values.shape
    assert indices.tolist() == [[1, 2], [0, 0]]


@pytest.mark.parametrize("start", [1.0, -3.5, 1e-3, 1000.0])
def test_snapping_keeps_apart_centroids_one_float32_step_apart(start):
    first = torch.nextafter(torch.tensor(start), torch.tensor(float("inf")))
    centroids = torch.stack([first, torch.nextafter(first, torch.tensor(float("inf")))])
    assert torch.equal(snap_to_codebook(centroids, centroids), centroids)
    assert assign_to_codebook(centroids, centroids).tolist() == [0, 1]


def test_update_centroids_is_the_mean_of_each_cluster():
    values = torch.tensor([1.0, 2.0, 3.0, 10.0, 20.0])
    indices = torch.tensor([0, 0, 0, 2, 2])
    centroids = torch.tensor([0.0, 7.0, 0.0])
    updated = update_centroids(values, indices, centroids)
    assert updated.tolist() == [2.0, 7.0, 15.0]


@settings(max_examples=40, deadline=None)
@given(values=st.lists(finite_floats, min_size=1, max_size=100), data=st.data())
def test_empty_clusters_keep_their_centroid_and_never_produce_nan(values, data):
    tensor = torch.tensor(values)
    indices = torch.tensor(data.draw(st.lists(st.integers(0, 7), min_size=len(values), max_size=len(values))))
    centroids = torch.arange(8, dtype=torch.float32) * 10
    updated = update_centroids(tensor, indices, centroids)
    assert bool(torch.isfinite(updated).all())
    for cluster in range(8):
        members = tensor[indices == cluster]
        expected = float(centroids[cluster]) if members.numel() == 0 else float(members.double().mean())
        assert float(updated[cluster]) == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_kmeans_objective_is_the_sum_of_squared_distances():
    values = torch.tensor([0.0, 1.0, 4.0])
    assert kmeans_objective(values, torch.tensor([0, 0, 1]), torch.tensor([0.5, 3.0])) == 0.25 + 0.25 + 1.0


def test_dequantize_restores_the_shape():
    restored = dequantize(torch.tensor([2, 0, 1, 1, 0, 2], dtype=torch.uint8), torch.tensor([-1.0, 0.0, 1.0]), (2, 3))
    assert restored.tolist() == [[1.0, -1.0, 0.0], [0.0, -1.0, 1.0]]


def test_quantized_tensor_validates_its_parts():
    with pytest.raises(ValueError, match="centroids"):
        QuantizedTensor(2, (4,), indices=torch.zeros(4, dtype=torch.uint8), centroids=torch.zeros(3))
    with pytest.raises(ValueError, match="float16"):
        QuantizedTensor(16, (4,))
    half = QuantizedTensor(16, (2, 2), values=torch.tensor([1.0, 2.0, 3.0, 4.0]).half())
    assert half.dequantize().dtype == torch.float32 and half.dequantize().shape == (2, 2)


# ------------------------------------------------------------------------------------------------ packing


@settings(max_examples=80, deadline=None)
@given(bits=codebook_bits, data=st.data())
def test_packed_indices_round_trip_for_every_width(bits, data):
    indices = torch.tensor(data.draw(st.lists(st.integers(0, 2**bits - 1), max_size=200)), dtype=torch.uint8)
    packed = pack_indices(indices, bits)
    assert packed.dtype == torch.uint8
    assert packed.numel() == math.ceil(indices.numel() * bits / 8) == packed_size(indices.numel(), bits)
    assert torch.equal(unpack_indices(packed, bits, indices.numel()), indices)


@pytest.mark.parametrize("bits", CODEBOOK_BITS)
def test_a_large_index_tensor_round_trips(bits):
    indices = torch.randint(0, 2**bits, (100_003,), generator=torch.Generator().manual_seed(bits))
    assert torch.equal(unpack_indices(pack_indices(indices, bits), bits, indices.numel()).long(), indices)


def test_three_bit_indices_run_across_byte_boundaries_least_significant_bit_first():
    # stream bits: 7 -> 1,1,1 ; 0 -> 0,0,0 ; 5 -> 1,0,1  => byte0 = 0b01000111, byte1 = 0b00000001
    assert pack_indices(torch.tensor([7, 0, 5]), 3).tolist() == [0b01000111, 0b00000001]


def test_four_bit_indices_fill_the_low_nibble_first():
    assert pack_indices(torch.tensor([1, 15, 3]), 4).tolist() == [0xF1, 0x03]


def test_packing_refuses_indices_that_do_not_fit_the_width():
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        pack_indices(torch.tensor([0, 4]), 2)


def test_unpacking_refuses_too_few_bytes():
    with pytest.raises(ValueError, match="need 2 bytes"):
        unpack_indices(torch.zeros(1, dtype=torch.uint8), 3, 4)


# ---------------------------------------------------------------------------------------------- group codebooks


def test_a_group_is_whole_rows_closest_to_the_asked_size():
    assert group_length((96, 64), 0) == 96 * 64  # 0: one codebook for the whole tensor
    assert group_length((96, 64), 200) == 3 * 64  # 200 / 64 rounds to 3 rows
    assert group_length((96, 64), 10) == 64  # never less than one row
    assert group_length((96, 64), 10**6) == 96 * 64  # never more than the tensor
    assert group_length((24, 16, 3), 100) == 2 * 48  # a conv kernel's row is in_channels x width
    with pytest.raises(ConfigError, match="group_size"):
        group_length((4, 4), -1)


def test_each_group_gets_the_codebook_fitted_to_its_own_rows_and_the_last_may_be_short():
    torch.manual_seed(0)
    values = torch.randn(10, 32) * torch.logspace(-2, 1, 10)[:, None]  # rows of very different scales
    grouped = fit_group_codebooks(values, bits=2, group_len=3 * 32)
    assert grouped.group_len == 96 and grouped.centroids.shape == (4 * 4,) and grouped.indices.dtype == torch.uint8
    flat = values.reshape(-1)
    for group, start in enumerate(range(0, flat.numel(), 96)):
        alone = fit_codebook(flat[start:start + 96], bits=2)
        assert torch.equal(grouped.centroids[4 * group:4 * group + 4], alone.centroids)
        assert torch.equal(grouped.indices[start:start + 96], alone.indices)
    one = fit_codebook(values, bits=2)
    small = slice(0, 3)  # the smallest rows: one shared codebook rounds them all to its centroid near zero
    assert (grouped.dequantize() - values)[small].pow(2).sum() < 0.1 * (one.dequantize() - values)[small].pow(2).sum()


def test_group_assignment_is_the_nearest_centroid_of_each_weights_own_group():
    torch.manual_seed(1)
    values = torch.randn(7, 20)
    centroids = torch.randn(3 * 8)  # groups of 3 rows: 60, 60 and 20 weights; unsorted centroids
    indices = assign_to_group_codebooks(values, centroids, group_len=60)
    flat = values.reshape(-1)
    for group, start in enumerate(range(0, flat.numel(), 60)):
        own = centroids[8 * group:8 * group + 8]
        assert torch.equal(indices[start:start + 60], assign_to_codebook(flat[start:start + 60], own))
    snapped = dequantize(indices, centroids, values.shape, group_len=60)
    assert torch.equal(snapped.reshape(-1)[120:], centroids[16:][indices[120:]])
