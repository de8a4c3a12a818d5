"""Training-time quantization: snapping around each step, the centroid loss and its updates (which tensors get
codebooks is `quads.compression.spec`).

Quantization-aware training here keeps "latent" float weights in the model's own parameters and only swaps
the snapped weights in for the forward/backward pass (straight-through estimator). Parameters are never
replaced or re-parametrised, so their identity and the state_dict keys stay the same, and a
DistributedDataParallel wrapper, an optimizer or a checkpoint sees an ordinary model. The training loop calls,
for every optimizer step:

    quantizer.swap_in_snapped()          # param <- snapped(latent); latent kept aside
    loss.backward()                      # gradient at the snapped point (DDP all-reduces it here)
    quantizer.restore_latent()           # param <- latent; grads stay: the STE
    spread = quantizer.add_centroid_gradient(coefficient)  # analytic d L_centroid / d w, no second backward
    clip_grad_norm_(...); optimizer.step()                 # updates the latent weights
    quantizer.update_centroids()         # each centroid <- mean of its cluster's latent weights

and at the end of every epoch of a quantization stage but its last `reassign_to_nearest()`. `reassign()` refits
the codebooks (k-means on the current weights) at the start of each stage and `hard_snap()` writes the
snapped weights into the model at its end.

Why the centroid term acts. L_centroid = (1/T) sum_t sum_i (w_ti - c_t[a_ti])^2 / var_t over the T codebook
tensors, var_t being tensor t's weight variance when its codebook was fitted. Normalised by variance and tensor
count, not by elements, the pull on one weight, 2 (w - c) / (T var_t), does not depend on its tensor's size or
scale (the old per-element mean made it 1e-7 to 1e-3 of CE's gradient; at lambda = 1 it is now 10-700x).
Centroids still follow their cluster means every step, so the pull does not move the codebook; it sets how far
latent weights stray from their centroids, and that decides cluster membership because assignments are
refreshed (nearest centroid) after every epoch: lambda = 0 lets weights drift under CE into other clusters, a
large lambda pins each weight to its centroid so the codebook moves as a whole. `latent_spread()` (mean over
tensors of mean_i (w - c)^2 / var_t) is recorded in the training history before each hard snap.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from quads.compression.codebook import (
    FP16_BITS,
    QuantizedTensor,
    assign_to_group_codebooks,
    fit_group_codebooks,
    group_count,
    group_length,
    group_offsets,
    has_codebook,
    validate_bits,
)
from quads.compression.codebook import update_centroids as cluster_means
from quads.compression.spec import QuantizationSpec, select_quantized_tensors
from quads.errors import ConfigError

STATE_FORMAT = 1  # version of CodebookQuantizer.state_dict()


@dataclass
class _TensorState:
    """Per-tensor training state: the parameter, its width and (codebook widths) centroids/assignments.

    A tensor split into groups (`group_len` weights each, 0 = one codebook) keeps its groups' codebooks
    concatenated and each weight's index into that concatenation, so snapping and cluster means are one
    gather and one scatter whatever the number of groups; the stored form has b-bit indices per group."""

    param: nn.Parameter
    bits: int
    group_len: int = 0
    centroids: Tensor | None = None  # float32 [G * 2^b] on the parameter's device
    indices: Tensor | None = None  # int64 [numel] into centroids, on the parameter's device, fixed within a stage
    counts: Tensor | None = None  # int64 [G * 2^b] members per cluster (constant while indices are)
    variance: Tensor | None = None  # float32 scalar: the weights' variance when the codebook was fitted
    latent: Tensor | None = None  # buffer holding the latent weights while snapped ones are swapped in

    def snapped(self) -> Tensor:
        """The weights on the codebook (or rounded to float16), in the parameter's dtype and shape."""
        if self.bits == FP16_BITS:
            return self.param.detach().to(torch.float16).to(self.param.dtype)
        self.follow_device()
        assert self.centroids is not None and self.indices is not None
        return torch.index_select(self.centroids, 0, self.indices).view_as(self.param).to(self.param.dtype)

    def follow_device(self) -> None:
        """Move the codebook to the parameter's device if the model was moved after fitting."""
        if self.centroids is not None and self.centroids.device != self.param.device:
            assert self.indices is not None and self.counts is not None and self.variance is not None
            device = self.param.device
            self.centroids, self.indices, self.counts, self.variance = (
                t.to(device) for t in (self.centroids, self.indices, self.counts, self.variance))

    def global_indices(self, local: Tensor) -> Tensor:
        """Indices into each weight's own group codebook -> indices into the concatenated centroids."""
        local = local.reshape(-1).to(device=self.param.device, dtype=torch.int64)
        if not self.group_len:
            return local
        return local + group_offsets(local.numel(), self.group_len, 2**self.bits, local.device)

    def local_indices(self) -> Tensor:
        """uint8 [numel]: each weight's index into its own group's 2^b centroids (the stored form)."""
        assert self.indices is not None
        return (self.indices % 2**self.bits).to(torch.uint8)

    def normalised_distance(self) -> Tensor:
        """(w - c[a]) / var: the per-weight pull of the centroid term before the 2 lambda / T factor."""
        assert self.variance is not None
        return (self.param.detach().float() - self.snapped().float()) / self.variance


class CodebookQuantizer:
    """The state of codebook quantization-aware training for one model (see the module docstring).

    Pass the bare model (not its DistributedDataParallel wrapper) so names match its state_dict. Codebooks are
    fitted on construction unless `fit=False` (e.g. before `load_state_dict` on resume).
    """

    def __init__(self, model: nn.Module, spec: QuantizationSpec | None = None, fit: bool = True) -> None:
        self.spec = spec or QuantizationSpec()
        self._model = model
        params = dict(model.named_parameters())
        self._states = {name: _TensorState(params[name], bits)
                        for name, bits in select_quantized_tensors(model, self.spec).items()}
        self._swapped = False
        if fit:
            self.reassign()

    # ------------------------------------------------------------------------------------------ introspection

    @property
    def bits(self) -> dict[str, int]:
        """Width of each quantized parameter, by name."""
        return {name: state.bits for name, state in self._states.items()}

    def centroids(self, name: str) -> Tensor:
        """A copy of the current codebook of parameter `name` (float32 [2^b]; [G * 2^b] for G groups)."""
        state = self._states[name]
        if state.centroids is None:
            raise KeyError(f"{name} has no codebook ({state.bits}-bit)")
        return state.centroids.clone()

    def assignments(self, name: str) -> Tensor:
        """A copy of the cluster index of each weight of parameter `name` (int64 [numel], into `centroids`)."""
        state = self._states[name]
        if state.indices is None:
            raise KeyError(f"{name} has no codebook ({state.bits}-bit)")
        return state.indices.clone()

    def _require_latent(self, action: str) -> None:
        if self._swapped:
            raise RuntimeError(f"cannot {action} while snapped weights are swapped in; call restore_latent() first")

    # ------------------------------------------------------------------------------------------ stage edges

    @torch.no_grad()
    def reassign(self) -> None:
        """Refit every codebook by k-means on the current weights (start of a quantization stage)."""
        self._require_latent("reassign")
        for state in self._states.values():
            if not has_codebook(state.bits):
                continue
            group_len = group_length(state.param.shape, self.spec.weights_per_centroid * 2**state.bits)
            codebook = fit_group_codebooks(state.param.detach(), state.bits, group_len, self.spec.iterations)
            state.group_len = codebook.group_len
            state.centroids = codebook.centroids.to(device=state.param.device, dtype=torch.float32)
            state.indices = state.global_indices(codebook.indices)
            state.counts = torch.bincount(state.indices, minlength=state.centroids.numel())
            state.variance = weight_variance(state.param)

    @torch.no_grad()
    def reassign_to_nearest(self) -> float:
        """Move each weight to its nearest centroid and recentre the centroids on their new clusters (between
        the epochs of a quantization stage; empty clusters keep their centroid). Returns the fraction of
        codebook weights that changed cluster. The variance of each tensor stays the one fitted at `reassign`."""
        self._require_latent("reassign to the nearest centroid")
        changed = total = 0
        for state in self._states.values():
            if state.centroids is None:
                continue
            state.follow_device()
            group_len = state.group_len or state.param.numel()
            indices = state.global_indices(assign_to_group_codebooks(state.param, state.centroids, group_len))
            changed += int((indices != state.indices).sum())
            total += indices.numel()
            state.indices = indices
            state.counts = torch.bincount(indices, minlength=state.centroids.numel())
            state.centroids = cluster_means(state.param, indices, state.centroids, state.counts)
        return changed / total if total else 0.0

    @torch.no_grad()
    def round_centroids_to(self, dtype: torch.dtype) -> None:
        """Round every centroid to a value representable in `dtype` (e.g. float16, the packed file's codebook
        dtype), so weights snapped afterwards equal what the file will hold bit for bit."""
        for name, state in self._states.items():
            if state.centroids is None:
                continue
            rounded = state.centroids.to(dtype)
            if not bool(torch.isfinite(rounded).all()):
                raise ConfigError(f"{name}: a centroid of magnitude {float(state.centroids.abs().max()):.3g} "
                                  f"does not fit in {dtype}; store codebooks as float32")
            state.centroids = rounded.float()

    @torch.no_grad()
    def hard_snap(self) -> None:
        """Write the snapped weights into the parameters for good (end of a quantization stage): each codebook
        tensor then holds at most 2^b distinct values and a following distillation stage starts from them."""
        self._require_latent("hard_snap")
        for state in self._states.values():
            state.param.copy_(state.snapped())

    # ------------------------------------------------------------------------------------------ every step

    @torch.no_grad()
    def swap_in_snapped(self) -> None:
        """Put the snapped weights into the parameters for the forward/backward pass; keep the latent ones."""
        self._require_latent("swap in snapped weights")
        for state in self._states.values():
            if state.latent is None or state.latent.shape != state.param.shape or \
                    state.latent.dtype != state.param.dtype or state.latent.device != state.param.device:
                state.latent = torch.empty_like(state.param, memory_format=torch.contiguous_format)
            state.latent.copy_(state.param)
            state.param.copy_(state.snapped())
        self._swapped = True

    @torch.no_grad()
    def restore_latent(self) -> None:
        """Put the latent weights back; gradients computed at the snapped point stay (straight-through)."""
        if not self._swapped:
            raise RuntimeError("restore_latent() without a matching swap_in_snapped()")
        for state in self._states.values():
            assert state.latent is not None
            state.param.copy_(state.latent)
        self._swapped = False

    @contextmanager
    def snapped(self) -> Iterator[None]:
        """Evaluate with snapped weights: `with quantizer.snapped(): model(x)`; latent weights come back after."""
        self.swap_in_snapped()
        try:
            yield
        finally:
            self.restore_latent()

    def _codebook_states(self) -> list[_TensorState]:
        return [state for state in self._states.values() if state.centroids is not None]

    @torch.no_grad()
    def centroid_loss(self) -> Tensor:
        """L_centroid = (1/T) sum_t sum_i (w_ti - c_t[a_ti])^2 / var_t (float32 scalar; 0 without codebooks)."""
        self._require_latent("compute the centroid loss")
        states = self._codebook_states()
        if not states:
            return torch.zeros(())
        terms = [(state.normalised_distance().pow(2) * state.variance).sum().cpu() for state in states]
        return torch.stack(terms).sum() / len(states)

    @torch.no_grad()
    def latent_spread(self) -> float:
        """Mean over codebook tensors of mean_i (w_ti - c_t[a_ti])^2 / var_t: how far the latent weights sit
        from their centroids, in units of each tensor's variance (0 right after a hard snap)."""
        self._require_latent("measure the latent spread")
        states = self._codebook_states()
        if not states:
            return 0.0
        spreads = [float((state.normalised_distance().pow(2) * state.variance).mean()) for state in states]
        return sum(spreads) / len(spreads)

    @torch.no_grad()
    def add_centroid_gradient(self, coefficient: float) -> float:
        """Add `coefficient * dL_centroid/dw` = coefficient * 2 (w - c[a]) / (T var_t) to each codebook
        parameter's `.grad` and return the latent spread (see `latent_spread`).

        Centroids and variances are constants here (centroids follow the weights through `update_centroids`).
        Being analytic, it works after DDP's all-reduce without a second backward pass. Call it once per
        optimizer step, after `restore_latent()`.
        """
        self._require_latent("add the centroid gradient")
        states = self._codebook_states()
        if not states:
            return 0.0
        spreads = []
        for state in states:
            param = state.param
            pull = state.normalised_distance()
            spreads.append(float((pull.pow(2) * state.variance).mean()))
            if coefficient != 0.0 and param.requires_grad:
                if param.grad is None:
                    param.grad = torch.zeros_like(param)
                param.grad.add_(pull.to(param.dtype), alpha=2.0 * coefficient / len(states))
        return sum(spreads) / len(spreads)

    @torch.no_grad()
    def update_centroids(self) -> None:
        """Move each centroid to the mean of its cluster's current latent weights (after `optimizer.step()`);
        an empty cluster keeps its centroid. Assignments do not change."""
        self._require_latent("update centroids")
        for state in self._states.values():
            if state.centroids is None:
                continue
            state.follow_device()
            assert state.indices is not None and state.counts is not None
            state.centroids = cluster_means(state.param, state.indices, state.centroids, state.counts)

    # ------------------------------------------------------------------------------------------ persistence

    def state_dict(self) -> dict:
        """Centroids, assignments and spec as plain tensors and JSON-able values, so `torch.save` writes it and
        `torch.load(..., weights_only=True)` reads it back; with the model's own state this resumes bit-exactly."""
        self._require_latent("save the quantizer state")
        return {
            "format": STATE_FORMAT,
            "spec": asdict(self.spec),
            "bits": self.bits,
            "centroids": {n: s.centroids.detach().cpu().clone() for n, s in self._states.items()
                          if s.centroids is not None},
            "indices": {n: s.local_indices().cpu() for n, s in self._states.items() if s.indices is not None},
            "group_lens": {n: s.group_len for n, s in self._states.items() if s.group_len},
            "variances": {n: s.variance.detach().cpu().clone() for n, s in self._states.items()
                          if s.variance is not None},
        }

    @classmethod
    def from_state_dict(cls, model: nn.Module, state: dict) -> CodebookQuantizer:
        """A quantizer for `model` with the spec, selection and codebooks saved by `state_dict()`."""
        quantizer = cls(model, QuantizationSpec(**state["spec"]), fit=False)
        quantizer.load_state_dict(state)
        return quantizer

    def load_state_dict(self, state: dict) -> None:
        """Restore codebooks saved by `state_dict()`. The saved spec and selection replace this quantizer's (so
        `CodebookQuantizer(model, fit=False).load_state_dict(saved)` restores any run); ConfigError if they do
        not fit this model."""
        self._require_latent("load the quantizer state")
        if state.get("format") != STATE_FORMAT:
            raise ConfigError(f"quantizer state has format {state.get('format')!r}; this quads reads {STATE_FORMAT}")
        spec = QuantizationSpec(**state["spec"])
        params = dict(self._model.named_parameters())
        states: dict[str, _TensorState] = {}
        for name, saved_bits in state["bits"].items():
            bits = validate_bits(int(saved_bits))
            if name not in params:
                raise ConfigError(f"the saved quantizer state quantizes {name!r}, which this model does not have")
            param = params[name]
            group_len = int(state.get("group_lens", {}).get(name, 0))
            states[name] = tensor_state = _TensorState(param, bits, group_len)
            if not has_codebook(bits):
                continue
            centroids, indices = state["centroids"].get(name), state["indices"].get(name)
            groups = group_count(param.numel(), group_len) if group_len > 0 else 1
            if centroids is None or indices is None or centroids.numel() != groups * 2**bits \
                    or indices.numel() != param.numel() or group_len < 0:
                raise ConfigError(f"{name}: the saved codebook is missing or does not fit the parameter "
                                  f"({param.numel()} weights, {bits} bits, {groups} codebooks)")
            if int(indices.max()) >= 2**bits:
                raise ConfigError(f"{name}: saved assignments point past its {2**bits}-entry codebook")
            tensor_state.centroids = centroids.to(device=param.device, dtype=torch.float32).clone()
            tensor_state.indices = tensor_state.global_indices(indices)
            tensor_state.counts = torch.bincount(tensor_state.indices, minlength=tensor_state.centroids.numel())
            variance = state.get("variances", {}).get(name)  # absent in files written before the variance
            tensor_state.variance = (weight_variance(param) if variance is None
                                     else variance.to(device=param.device, dtype=torch.float32).clone())
        self.spec, self._states = spec, states

    # ------------------------------------------------------------------------------------------ export

    @torch.no_grad()
    def export(self) -> dict[str, QuantizedTensor]:
        """Every quantized tensor in its stored form, from the current codebooks and assignments (the weights
        the model computes with after `hard_snap()`); the rest of the model's state stays float."""
        exported: dict[str, QuantizedTensor] = {}
        for name, state in self._states.items():
            shape = tuple(state.param.shape)
            if state.bits == FP16_BITS:
                exported[name] = QuantizedTensor(FP16_BITS, shape, values=state.param.detach().cpu().half())
            else:
                assert state.indices is not None and state.centroids is not None
                exported[name] = QuantizedTensor(state.bits, shape, indices=state.local_indices().cpu(),
                                                 centroids=state.centroids.detach().cpu().clone(),
                                                 group_len=state.group_len)
        return exported

    def summary(self, codebook_bytes_per_value: int = 2) -> dict:
        """Counts for reports: quantized tensors, parameters per bit width and the theoretical size in bytes
        (bit-packed indices + codebooks at `codebook_bytes_per_value` + float16 tensors + float remainder)."""
        params_by_bits: dict[int, int] = {}
        size = 0.0
        for state in self._states.values():
            numel = state.param.numel()
            params_by_bits[state.bits] = params_by_bits.get(state.bits, 0) + numel
            if state.bits == FP16_BITS:
                size += 2 * numel
            else:
                groups = group_count(numel, state.group_len) if state.group_len else 1
                size += math.ceil(numel * state.bits / 8) + codebook_bytes_per_value * groups * 2**state.bits
        float_elements = 0
        for name, tensor in self._model.state_dict().items():
            if name not in self._states:
                float_elements += tensor.numel()
                size += tensor.numel() * (4 if tensor.is_floating_point() else tensor.element_size())
        return {
            "quantized_tensors": len(self._states),
            "params_by_bits": dict(sorted(params_by_bits.items())),
            "float_remainder_elements": float_elements,
            "theoretical_bytes": int(size),
        }


def weight_variance(param: Tensor) -> Tensor:
    """A tensor's weight variance (float32 scalar on its device), floored so a constant tensor divides safely."""
    return param.detach().float().var(unbiased=False).clamp_min(1e-12)


def post_training_quantize(model: nn.Module, spec: QuantizationSpec | None = None,
                           codebook_dtype: torch.dtype | None = torch.float16) -> CodebookQuantizer:
    """The PTQ baseline: fit codebooks to the trained weights and snap them, no retraining. Centroids are
    rounded to `codebook_dtype` first (None keeps float32) so the model equals its packed file exactly."""
    quantizer = CodebookQuantizer(model, spec)
    if codebook_dtype is not None:
        quantizer.round_centroids_to(codebook_dtype)
    quantizer.hard_snap()
    return quantizer
