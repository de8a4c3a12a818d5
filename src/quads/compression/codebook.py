"""Tensor-level k-means codebooks: fit, assign, snap, update centroids, pack and unpack b-bit indices.

A b-bit tensor shares 2^b float values (its codebook); each weight is stored as the b-bit index of its nearest
centroid. In one dimension k-means clusters are contiguous runs of the sorted values, so fitting works on the
sorted tensor with cumulative sums: one Lloyd iteration costs O(K log n) after a single O(n log n) sort,
far cheaper than a generic k-means, and a quantile initialisation makes it deterministic.

A tensor may also be split into groups of whole rows (dimension 0, e.g. output channels), each with its own
codebook (`group_length`): the codebooks are then concatenated, group g's 2^b centroids at [g*2^b, (g+1)*2^b),
and each weight's b-bit index points into its own group's codebook.

Nothing here knows about models or training; `quads.compression.quantize` composes these primitives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from quads.errors import ConfigError

CODEBOOK_BITS = (1, 2, 3, 4, 8)  # widths stored as a codebook of 2^b centroids plus b-bit indices
FP16_BITS = 16  # stored as float16, no codebook
FLOAT_BITS = 32  # left as float32
SUPPORTED_BITS = (*CODEBOOK_BITS, FP16_BITS, FLOAT_BITS)


def validate_bits(bits: int) -> int:
    """Return `bits` if it is a supported width, else raise ConfigError listing the supported ones."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in SUPPORTED_BITS:
        raise ConfigError(
            f"unsupported bit width {bits!r}: choose one of 1, 2, 3, 4, 8 (k-means codebook of 2^b values), "
            "16 (float16) or 32 (float32, not quantized)"
        )
    return bits


def has_codebook(bits: int) -> bool:
    """True for the widths that use a codebook (1, 2, 3, 4, 8); 16 and 32 store floats."""
    return validate_bits(bits) in CODEBOOK_BITS


def _require_codebook_bits(bits: int) -> int:
    if not has_codebook(bits):
        raise ConfigError(f"{bits}-bit tensors have no codebook; codebook widths are {CODEBOOK_BITS}")
    return bits


def group_length(shape: tuple[int, ...] | torch.Size, group_size: int) -> int:
    """Weights per codebook of a tensor of `shape`: whole rows (dimension 0), as many as come closest to
    `group_size` weights (at least one row); `group_size` 0 means one codebook for the whole tensor."""
    numel = math.prod(shape)
    if group_size < 0:
        raise ConfigError(f"group_size must be 0 (one codebook per tensor) or a number of weights, got {group_size}")
    if group_size == 0 or len(shape) == 0 or numel == 0:
        return max(numel, 1)
    row = numel // shape[0]
    return min(numel, max(1, round(group_size / row)) * row)


def group_count(numel: int, group_len: int) -> int:
    """Codebooks of a tensor of `numel` weights in groups of `group_len` (the last group may be shorter)."""
    return -(-numel // group_len)


def group_offsets(numel: int, group_len: int, k: int, device: torch.device | str | None = None) -> Tensor:
    """int64 [numel]: where each weight's group codebook starts in the concatenated centroids (g * k)."""
    return torch.div(torch.arange(numel, device=device), group_len, rounding_mode="floor") * k


@dataclass
class Codebook:
    """A fitted codebook: `centroids` [G * 2^b] float32 (each group's ascending), `indices` [numel] uint8 into
    its group's 2^b; `group_len` weights per group (0: one codebook for the whole tensor, G = 1)."""

    centroids: Tensor
    indices: Tensor
    bits: int
    shape: tuple[int, ...]
    group_len: int = 0

    def dequantize(self) -> Tensor:
        """The snapped tensor (float32, original shape)."""
        return dequantize(self.indices, self.centroids, self.shape, self.group_len)


@dataclass(frozen=True)
class QuantizedTensor:
    """One tensor in its stored form: a codebook (bits 1-8: `indices` uint8 [numel] and `centroids` float32
    [G * 2^b], G = one codebook per `group_len` weights, 0 meaning the whole tensor) or float16 values
    (bits 16: `values`, no codebook)."""

    bits: int
    shape: tuple[int, ...]
    indices: Tensor | None = None
    centroids: Tensor | None = None
    values: Tensor | None = None
    group_len: int = 0

    def __post_init__(self) -> None:
        validate_bits(self.bits)
        numel = math.prod(self.shape)
        if has_codebook(self.bits):
            if self.indices is None or self.centroids is None:
                raise ValueError(f"a {self.bits}-bit QuantizedTensor needs indices and centroids")
            if self.indices.numel() != numel:
                raise ValueError(f"indices hold {self.indices.numel()} values but shape {self.shape} has {numel}")
            if self.group_len < 0:
                raise ValueError(f"group_len must be 0 or positive, got {self.group_len}")
            expected = self.groups * 2**self.bits
            if self.centroids.numel() != expected:
                raise ValueError(f"{self.groups} {self.bits}-bit codebooks hold {expected} centroids, got "
                                 f"{self.centroids.numel()}")
        elif self.bits == FP16_BITS:
            if self.values is None or self.values.numel() != numel:
                raise ValueError(f"a 16-bit QuantizedTensor needs float16 values of shape {self.shape}")
        else:
            raise ValueError("32-bit tensors are not quantized; keep them in the float state")

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def groups(self) -> int:
        """How many codebooks the tensor has (1 unless it is split into groups)."""
        return group_count(self.numel, self.group_len) if self.group_len else 1

    def dequantize(self) -> Tensor:
        """The float32 tensor this stands for."""
        if self.bits == FP16_BITS:
            assert self.values is not None
            return self.values.to(torch.float16).float().reshape(self.shape)
        assert self.indices is not None and self.centroids is not None
        return dequantize(self.indices, self.centroids, self.shape, self.group_len)


# ---------------------------------------------------------------------------------------------- assignment


def _decision_boundaries(sorted_centroids: Tensor) -> Tensor:
    """Midpoints between consecutive centroids, in float64: exact for float32 centroids, so a value equal to a
    centroid always lies strictly on its own side (snapping is idempotent)."""
    c = sorted_centroids.double()
    return (c[:-1] + c[1:]) / 2


def assign_to_codebook(values: Tensor, centroids: Tensor) -> Tensor:
    """Index (int64, same shape as `values`) of each value's nearest centroid; ties go to the lower centroid.
    Centroids need not be sorted (they drift during training); duplicates are allowed."""
    centroids = centroids.detach().flatten()
    sorted_centroids, order = torch.sort(centroids, stable=True)
    boundaries = _decision_boundaries(sorted_centroids).to(values.device)
    position = torch.searchsorted(boundaries, values.detach().double().contiguous(), right=False)
    return torch.index_select(order.to(values.device), 0, position.reshape(-1)).reshape(position.shape)


def dequantize(indices: Tensor, centroids: Tensor, shape: tuple[int, ...] | torch.Size, group_len: int = 0) -> Tensor:
    """The float32 tensor of `shape` whose entries are `centroids[indices]`, each index read in its group's
    codebook when the tensor has one per `group_len` weights."""
    flat = indices.reshape(-1).long()
    if group_len and group_len < flat.numel():
        flat = flat + group_offsets(flat.numel(), group_len, centroids.numel() // group_count(flat.numel(), group_len),
                                    flat.device)
    return centroids.float().to(indices.device)[flat].reshape(tuple(shape))


def assign_to_group_codebooks(values: Tensor, centroids: Tensor, group_len: int) -> Tensor:
    """Like `assign_to_codebook` for a tensor with one codebook per `group_len` weights (`centroids` [G * k],
    see the module docstring): each weight's index (int64, flat) into its own group's k centroids."""
    flat = values.detach().reshape(-1)
    numel = flat.numel()
    groups = group_count(numel, group_len)
    if groups == 1:
        return assign_to_codebook(flat, centroids)
    sorted_centroids, order = torch.sort(centroids.detach().reshape(groups, -1).to(flat.device), dim=1, stable=True)
    c = sorted_centroids.double()
    boundaries = ((c[:, :-1] + c[:, 1:]) / 2).contiguous()
    padded = flat.double().new_zeros(groups * group_len)
    padded[:numel] = flat.double()
    position = torch.searchsorted(boundaries, padded.reshape(groups, group_len), right=False)
    return torch.gather(order, 1, position).reshape(-1)[:numel]


def snap_to_codebook(values: Tensor, centroids: Tensor) -> Tensor:
    """Replace each value by its nearest centroid (same shape and dtype as `values`); idempotent."""
    indices = assign_to_codebook(values, centroids)
    return centroids.to(device=values.device, dtype=torch.float32)[indices].to(values.dtype)


def update_centroids(values: Tensor, indices: Tensor, centroids: Tensor, counts: Tensor | None = None) -> Tensor:
    """New centroids (float32): the mean of each cluster's members; an empty cluster keeps its old centroid,
    so no NaN can appear. `counts` (members per cluster) may be passed when the assignments are fixed.
    Sums are in float64 with `index_add_`, deterministic on CPU and under `torch.use_deterministic_algorithms`
    on CUDA (unlike a weighted `bincount`)."""
    k = centroids.numel()
    flat_indices = indices.reshape(-1).long()
    sums = torch.zeros(k, dtype=torch.float64, device=values.device)
    sums.index_add_(0, flat_indices, values.detach().reshape(-1).double())
    if counts is None:
        counts = torch.bincount(flat_indices, minlength=k)
    means = sums / counts.clamp(min=1)
    return torch.where(counts > 0, means, centroids.double().to(values.device)).float()


def kmeans_objective(values: Tensor, indices: Tensor, centroids: Tensor) -> float:
    """Sum of squared distances of the values to their assigned centroids (k-means inertia), in float64."""
    snapped = centroids.double().to(values.device)[indices.reshape(-1).long()]
    return float((values.detach().reshape(-1).double() - snapped).pow(2).sum())


# ---------------------------------------------------------------------------------------------- fitting


def _cluster_sums(prefix: Tensor, edges: Tensor) -> Tensor:
    return prefix[edges[1:]] - prefix[edges[:-1]]


def _initial_centroids(sorted_values: Tensor, k: int) -> Tensor:
    """Deterministic start near the optimum: quantiles of the cube root of the value density.

    For many centroids, the k-means-optimal codebook places centroids with density proportional to p(x)^(1/3)
    (Panter and Dite, 1951), not p(x): equal-mass quantiles starve the tails and leave Lloyd iterations far
    from converged at 8 bits (about 6x the objective after 25 iterations on Gaussian weights). The density is
    read off order statistics, so outliers get centroids without a histogram's fixed bins. If heavy ties make
    two starting centroids equal, fall back to equal-count bins of the distinct values (all distinct).
    """
    n = sorted_values.numel()
    m = min(n - 1, 64 * k)  # intervals between order statistics, each holding ~n/m values
    positions = torch.div(torch.arange(m + 1, dtype=torch.int64) * (n - 1), m, rounding_mode="floor")
    knots = sorted_values[positions]
    widths = torch.diff(knots)
    cube_root_mass = torch.diff(positions).double().pow(1 / 3) * widths.pow(2 / 3)  # integral of p^(1/3)
    cumulative = torch.cat([cube_root_mass.new_zeros(1), torch.cumsum(cube_root_mass, 0)])
    cumulative = cumulative / cumulative[-1]
    targets = (torch.arange(k, dtype=torch.float64) + 0.5) / k
    interval = torch.searchsorted(cumulative, targets, right=True).clamp(1, m) - 1
    gap = (cumulative[interval + 1] - cumulative[interval]).clamp(min=torch.finfo(torch.float64).tiny)
    fraction = ((targets - cumulative[interval]) / gap).clamp(0, 1)
    centroids = knots[interval] + fraction * widths[interval]
    if bool((centroids[1:] > centroids[:-1]).all()):
        return centroids
    distinct = torch.unique_consecutive(sorted_values)
    edges = torch.div(torch.arange(k + 1, dtype=torch.int64) * distinct.numel(), k, rounding_mode="floor")
    distinct_prefix = torch.cat([distinct.new_zeros(1), torch.cumsum(distinct, 0)])
    return _cluster_sums(distinct_prefix, edges) / torch.diff(edges).double()


def _objective_of_runs(sorted_values: Tensor, edges: Tensor, centroids: Tensor) -> float:
    members = torch.repeat_interleave(centroids, torch.diff(edges))
    return float((sorted_values - members).pow(2).sum())


def fit_codebook(
    values: Tensor,
    bits: int,
    iterations: int = 25,
    tol: float = 0.0,
    history: list[float] | None = None,
) -> Codebook:
    """Fit a 2^b-centroid codebook to the scalar values of `values` by 1-D k-means (Lloyd) on sorted values.

    Deterministic: a cube-root-density quantile initialisation (see `_initial_centroids`), no randomness,
    computed on the CPU in float64 whatever the input's device and dtype, so a GPU run and a CPU run get the
    same codebook. Stops at a fixed point (no value changes cluster), after `iterations`, or when no centroid
    moves more than `tol` times the value range. A tensor with at most 2^b distinct values gets them as
    centroids exactly (the last one repeated to fill the codebook). If `history` is given, the k-means
    objective (sum of squared distances) is appended before the first update and after every iteration;
    it never increases.
    """
    k = 2 ** _require_codebook_bits(bits)
    shape = tuple(values.shape)
    flat = values.detach().reshape(-1).cpu()
    flat = flat if flat.dtype == torch.float64 else flat.float()  # exact: float16/bfloat16 embed in float32
    if flat.numel() == 0:
        raise ValueError("cannot fit a codebook to an empty tensor")
    if not bool(torch.isfinite(flat).all()):
        bad = int((~torch.isfinite(flat)).sum())
        raise ValueError(f"cannot fit a codebook to a tensor with {bad} NaN/Inf values (did training diverge?)")
    # numpy's sort is 2-3x faster than torch.sort on the CPU; order is the same before and after widening.
    sorted_values = torch.from_numpy(np.sort(flat.numpy())).double()
    distinct = torch.unique_consecutive(sorted_values)

    if distinct.numel() <= k:
        centroids = torch.cat([distinct, distinct[-1:].expand(k - distinct.numel())])
        if history is not None:
            history.append(0.0)
    else:
        centroids = _fit_sorted(sorted_values, k, iterations, tol, history)

    centroids32 = centroids.float()
    indices = assign_to_codebook(flat, centroids32).to(torch.uint8)
    device = values.device
    return Codebook(centroids=centroids32.to(device), indices=indices.to(device), bits=bits, shape=shape)


def fit_group_codebooks(values: Tensor, bits: int, group_len: int, iterations: int = 25) -> Codebook:
    """One `fit_codebook` per consecutive run of `group_len` weights (see `group_length`), concatenated: centroids
    [G * 2^b], indices [numel] uint8 into each weight's own group codebook."""
    flat = values.detach().reshape(-1)
    if group_len <= 0 or group_len >= flat.numel():
        return fit_codebook(values, bits, iterations=iterations)
    fitted = [fit_codebook(flat[start:start + group_len], bits, iterations=iterations)
              for start in range(0, flat.numel(), group_len)]
    return Codebook(centroids=torch.cat([codebook.centroids for codebook in fitted]),
                    indices=torch.cat([codebook.indices for codebook in fitted]),
                    bits=bits, shape=tuple(values.shape), group_len=group_len)


def _fit_sorted(sorted_values: Tensor, k: int, iterations: int, tol: float, history: list[float] | None) -> Tensor:
    """Lloyd iterations on sorted float64 values; clusters are the runs between decision boundaries."""
    n = sorted_values.numel()
    prefix = torch.cat([sorted_values.new_zeros(1), torch.cumsum(sorted_values, 0)])
    span = float(sorted_values[-1] - sorted_values[0])
    centroids = _initial_centroids(sorted_values, k)
    previous_edges = None
    for _ in range(iterations):
        inner = torch.searchsorted(sorted_values, _decision_boundaries(centroids), right=True)
        edges = torch.cat([inner.new_zeros(1), inner, inner.new_full((1,), n)])
        if previous_edges is not None and torch.equal(edges, previous_edges):
            break  # fixed point: the same clusters give the same means
        if history is not None and previous_edges is None:
            history.append(_objective_of_runs(sorted_values, edges, centroids))
        counts = torch.diff(edges)
        means = _cluster_sums(prefix, edges) / counts.clamp(min=1).double()
        updated = torch.where(counts > 0, means, centroids)  # an empty cluster keeps its centroid
        if history is not None:
            history.append(_objective_of_runs(sorted_values, edges, updated))
        moved = float((updated - centroids).abs().max())
        centroids, previous_edges = updated, edges
        if moved <= tol * span:
            break
    return centroids


# ---------------------------------------------------------------------------------------------- bit packing


def packed_size(numel: int, bits: int) -> int:
    """Bytes taken by `numel` indices of `bits` bits each, packed back to back."""
    return (numel * _require_codebook_bits(bits) + 7) // 8


def pack_indices(indices: Tensor, bits: int) -> Tensor:
    """Pack indices (< 2^b) into a uint8 tensor of ceil(numel*b/8) bytes.

    Layout (part of the packed file format): index i occupies bits [i*b, (i+1)*b) of a little-endian bit
    stream, its least significant bit first; stream bit s is bit (s % 8) of byte s // 8. Widths that do not
    divide 8 (3 bits) run across byte boundaries; the last byte is zero-padded.
    """
    _require_codebook_bits(bits)
    flat = indices.detach().reshape(-1).cpu()
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= 2**bits):
        raise ValueError(f"{bits}-bit indices must lie in [0, {2**bits}), got [{int(flat.min())}, {int(flat.max())}]")
    flat = flat.to(torch.uint8)
    if bits == 8:
        return flat.clone()
    shifts = torch.arange(bits, dtype=torch.uint8)
    stream = ((flat.unsqueeze(1) >> shifts) & 1).reshape(-1)
    stream = torch.cat([stream, stream.new_zeros(packed_size(flat.numel(), bits) * 8 - stream.numel())])
    weights = torch.tensor([1 << j for j in range(8)], dtype=torch.int32)
    return (stream.reshape(-1, 8).to(torch.int32) * weights).sum(1).to(torch.uint8)


def unpack_indices(packed: Tensor, bits: int, numel: int) -> Tensor:
    """Inverse of `pack_indices`: the first `numel` b-bit indices as uint8."""
    needed = packed_size(numel, bits)
    flat = packed.detach().reshape(-1).cpu()
    if flat.dtype != torch.uint8:
        raise ValueError(f"packed indices must be uint8, got {flat.dtype}")
    if flat.numel() < needed:
        raise ValueError(f"{numel} indices of {bits} bits need {needed} bytes, got {flat.numel()}")
    if bits == 8:
        return flat[:numel].clone()
    if 8 % bits == 0:  # 1, 2, 4 bits: fields never straddle a byte, so shift each byte once per field
        shifts = torch.arange(0, 8, bits, dtype=torch.uint8)
        return ((flat[:needed].unsqueeze(1) >> shifts) & ((1 << bits) - 1)).reshape(-1)[:numel].clone()
    stream = (flat[:needed].unsqueeze(1) >> torch.arange(8, dtype=torch.uint8)) & 1
    fields = stream.reshape(-1)[: numel * bits].reshape(numel, bits).to(torch.int32)
    weights = torch.tensor([1 << j for j in range(bits)], dtype=torch.int32)
    return (fields * weights).sum(1).to(torch.uint8)
