"""The optimizer and its schedule: AdamW with per-group learning rates, linear warm-up then cosine decay."""

from __future__ import annotations

import math

import torch
from torch import nn

from quads.config import OptimConfig


def learning_rate_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Linear warm-up, then cosine decay to `min_ratio` of the peak; a pure function of the step."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(module: nn.Module, optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW with per-group learning rates (encoder and pooling, head, projection); no weight decay on biases
    and norms."""
    groups: dict[str, dict[str, list[nn.Parameter]]] = {}
    head_lr = optim.head_lr or optim.lr
    projection_lr = optim.projection_lr or optim.lr
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("projection."):
            group, lr = "projection", projection_lr
        elif (".head." in f".{name}" or name.startswith("classifier.head")) and ".pools." not in name:
            group, lr = "head", head_lr  # a slot head's poolings (head.pools.*) train with the encoder, as pooling does
        else:
            group, lr = "encoder", optim.lr
        decay = "decay" if param.ndim > 1 else "no_decay"
        groups.setdefault(f"{group}/{decay}", {"params": [], "lr": [lr]})["params"].append(param)
    param_groups = [
        {
            "name": key,
            "params": value["params"],
            "lr": value["lr"][0],
            "initial_lr": value["lr"][0],
            "weight_decay": optim.weight_decay if key.endswith("/decay") else 0.0,
        }
        for key, value in sorted(groups.items())
    ]
    return torch.optim.AdamW(param_groups)
