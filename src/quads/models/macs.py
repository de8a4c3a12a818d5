"""Multiply-accumulates of one forward pass, counted by PyTorch's own FlopCounterMode.

FlopCounterMode counts 2 FLOPs per multiply-accumulate for matmuls and convolutions (elementwise ops, norms
and softmax are not counted, as in the paper's GMACs), so MACs = FLOPs / 2. Attention matmuls are included:
through plain matmuls, or through scaled_dot_product_attention, whose CPU fused kernel
(`_scaled_dot_product_flash_attention_for_cpu`) PyTorch's table does not list, so it is registered here with
PyTorch's own formula (QK^T and attention x V).

Measured: a Whisper-tiny-sized encoder (random init, 80 mels) on 3000 frames (30 s) = 18.47 GMACs, the paper's
figure (≈18.5, docs/METHOD.md): conv stem 0.94, linear layers 10.62, attention matmuls 6.91. Without the attention
matmuls it would read 11.6, which is what a counter blind to fused attention reports.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

_CPU_FUSED_ATTENTION = [
    getattr(torch.ops.aten, name)
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable")
    if hasattr(torch.ops.aten, name)
]


def _fused_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


@torch.no_grad()
def count_macs(model: nn.Module, features: Tensor, mask: Tensor) -> int:
    """MACs of `model(features, mask)` (the whole batch; pass one utterance for a per-utterance figure)."""
    counter = FlopCounterMode(display=False, custom_mapping={op: _fused_attention_flops for op in _CPU_FUSED_ATTENTION})
    was_training = model.training
    model.eval()
    try:
        with counter:
            model(features, mask)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def gmacs_at_length(model: nn.Module, n_mels: int, n_frames: int) -> float:
    """GMACs for one utterance of `n_frames` log-mel frames (100 per second; 3000 = Whisper's 30 s padding)."""
    features = torch.zeros(1, n_mels, n_frames)
    mask = torch.ones(1, n_frames, dtype=torch.bool)
    parameter = next(model.parameters(), None)
    if parameter is not None:
        features, mask = features.to(parameter.device), mask.to(parameter.device)
    return count_macs(model, features, mask) / 1e9
