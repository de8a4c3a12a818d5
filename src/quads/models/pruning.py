"""Structured pruning of a Whisper encoder's feed-forward blocks: a narrower student cut from pretrained layers.

Each encoder layer's feed-forward block is fc2(GELU(fc1(LayerNorm(x)))): `ffn` hidden units, each one a row of
fc1 (and its bias) and a column of fc2. `narrow_feed_forward` keeps the `width` units whose output varies most
(the standard deviation of the unit's GELU output times the norm of the fc2 column it writes with) and folds what
the dropped units write on average into fc2's bias, so the narrowed layer starts close to the full one and
distillation recovers the rest.

The statistics come from real speech when the student is built with calibration batches
(`unit_statistics`: the full layers run on them, every real frame counted); without any, from a data-free
model in which the LayerNorm's normalised input is a standard Gaussian (the pre-activation is then Gaussian with
mean w·β + b and standard deviation ‖w ⊙ γ‖, γ and β the LayerNorm's weight and bias). Whisper's normalised frames
are far from that Gaussian (a few channels carry most of their energy): a 3-layer tiny.en student cut to 768 of
its 1,536 units per layer, on statistics of 64 training clips, kept 0.93 cosine similarity to the full layers'
frames on 48 valid clips; on the data-free statistics, 0.79 (`bench/README.md`, "Narrower feed-forward blocks").
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from quads.errors import ConfigError

# Points of a standard normal at evenly spaced quantiles: a Gaussian expectation as a plain average
_QUANTILES = 64
_FC1_WEIGHT = re.compile(r"^layers\.(\d+)\.fc1\.weight$")

# Per encoder layer: the mean and the standard deviation of each unit's GELU output, [ffn] each
UnitStatistics = dict[int, tuple[Tensor, Tensor]]


def _standard_normal_points(device: torch.device) -> Tensor:
    probabilities = (torch.arange(_QUANTILES, dtype=torch.float64, device=device) + 0.5) / _QUANTILES
    return torch.special.ndtri(probabilities)


def gaussian_statistics(fc1_weight: Tensor, fc1_bias: Tensor, norm_weight: Tensor,
                        norm_bias: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation of each unit's GELU output when the LayerNorm's normalised input is a
    standard Gaussian (no data needed)."""
    weight = fc1_weight.double()
    center = weight @ norm_bias.double() + fc1_bias.double()
    spread = (weight * norm_weight.double()).norm(dim=1)
    outputs = F.gelu(center[:, None] + spread[:, None] * _standard_normal_points(weight.device)[None, :])
    return outputs.mean(dim=1).float(), outputs.std(dim=1, correction=0).float()


def unit_statistics(encoder: torch.nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> UnitStatistics:
    """Each layer's unit statistics measured on real speech: `encoder` is a `WhisperTeacherEncoder` (full
    width), `batches` yields (features [B, n_mels, T], mask [B, T]); only real frames count."""
    outputs: dict[int, Tensor] = {}

    def keep_output(index: int, layer: torch.nn.Module):
        def hook(module, inputs, output) -> None:
            outputs[index] = layer.activation_fn(output)
        return hook

    hooks = [layer.fc1.register_forward_hook(keep_output(index, layer))
             for index, layer in enumerate(encoder.encoder.layers)]
    sums: dict[int, Tensor] = {}
    squares: dict[int, Tensor] = {}
    frames = 0
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            for features, mask in batches:
                _, frame_mask = encoder(features, mask)
                for index, output in outputs.items():
                    real = output[frame_mask].double()
                    sums[index] = sums.get(index, 0) + real.sum(dim=0)
                    squares[index] = squares.get(index, 0) + real.pow(2).sum(dim=0)
                frames += int(frame_mask.sum())
    finally:
        for hook in hooks:
            hook.remove()
        encoder.train(was_training)
    if frames == 0:
        raise ConfigError("feed-forward pruning: the calibration batches hold no real frame")
    statistics = {}
    for index in sums:
        mean = sums[index] / frames
        variance = (squares[index] / frames - mean.pow(2)).clamp(min=0)
        statistics[index] = (mean.float(), variance.sqrt().float())
    return statistics


def layer_statistics(state: dict[str, Tensor], layer: int, statistics: UnitStatistics | None) -> tuple[Tensor, Tensor]:
    """A layer's unit statistics: measured where given, else the data-free Gaussian ones."""
    if statistics is not None and layer in statistics:
        return statistics[layer]
    prefix = f"layers.{layer}."
    return gaussian_statistics(state[prefix + "fc1.weight"], state[prefix + "fc1.bias"],
                               state[prefix + "final_layer_norm.weight"], state[prefix + "final_layer_norm.bias"])


def kept_units(state: dict[str, Tensor], layer: int, width: int, statistics: UnitStatistics | None = None) -> Tensor:
    """The indices (ascending) of the `width` units of encoder layer `layer` whose output varies most."""
    _, spread = layer_statistics(state, layer, statistics)
    return _strongest(spread, state[f"layers.{layer}.fc2.weight"], width)


def _strongest(spread: Tensor, fc2_weight: Tensor, width: int) -> Tensor:
    importance = spread.double() * fc2_weight.double().norm(dim=0)
    return importance.topk(width).indices.sort().values


def narrow_feed_forward(state: dict[str, Tensor], width: int,
                        statistics: UnitStatistics | None = None) -> dict[str, Tensor]:
    """A Whisper encoder state dict with every layer's feed-forward block cut to `width` units (`kept_units`), the
    dropped units' mean output folded into fc2's bias (a copy; the state's own width returns it unchanged)."""
    layers = sorted(int(match.group(1)) for key in state if (match := _FC1_WEIGHT.match(key)))
    if not layers:
        return dict(state)
    current = int(state[f"layers.{layers[0]}.fc1.weight"].shape[0])
    if not 1 <= width <= current:
        raise ConfigError(f"whisper student: encoder_ffn_dim must be in 1..{current} (the checkpoint's feed-forward "
                          f"width: units are only removed), got {width}")
    narrowed = dict(state)
    if width == current:
        return narrowed
    for layer in layers:
        prefix = f"layers.{layer}."
        fc2 = state[prefix + "fc2.weight"]
        mean, spread = layer_statistics(state, layer, statistics)
        keep = _strongest(spread, fc2, width)
        dropped = torch.ones(current, dtype=torch.bool, device=keep.device)
        dropped[keep] = False
        narrowed[prefix + "fc1.weight"] = state[prefix + "fc1.weight"][keep].clone()
        narrowed[prefix + "fc1.bias"] = state[prefix + "fc1.bias"][keep].clone()
        narrowed[prefix + "fc2.weight"] = fc2[:, keep].clone()
        narrowed[prefix + "fc2.bias"] = state[prefix + "fc2.bias"] + fc2[:, dropped] @ mean[dropped].to(fc2.dtype)
    return narrowed
