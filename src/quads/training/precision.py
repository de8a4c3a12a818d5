"""The arithmetic a training step's forward pass runs in: float32, or bfloat16 autocast where it is fast.

`optim.precision` names it: `fp32` (the default), `bf16` (torch autocast to bfloat16: matrix products and
convolutions in bf16, weights, gradients, optimizer state, losses and codebooks stay float32), or `auto` (bf16
where the hardware multiplies bf16 matrices natively, a CPU with AMX tiles such as Intel Xeon 4th generation and
later or a CUDA GPU that supports bf16; fp32 elsewhere, where bf16 is emulated and slower). bf16 trains 1.5x
faster on a CPU with AMX, but the demo's 4-bit files scored about a point lower (bench/README.md).
Only training steps change: evaluation, exported files and every reported accuracy run in float32.

bf16 kernels are compiled for each input shape (oneDNN): a batch of every new length would compile its own, so
bf16 steps pad each batch to a multiple of `LENGTH_MULTIPLE` frames (`shape_bucketed`). The new frames are masked
padding, which the encoders ignore, so only the kernels reused change, never what a real frame computes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from quads.config import PRECISIONS
from quads.errors import ConfigError
from quads.training.batches import Batch

LENGTH_MULTIPLE = 32  # frames: ~15 batch lengths over the built-in corpus instead of ~400


def native_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies bf16 matrices in hardware (AMX on a CPU; bf16 support on a CUDA GPU)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
        return bool(probe()) if probe is not None else False
    return False


def resolve_precision(precision: str, device: torch.device | None = None) -> str:
    """`fp32` or `bf16`: what `optim.precision` means on `device` (the CPU when None)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"optim.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device or torch.device("cpu")) else "fp32"
    return precision


@contextlib.contextmanager
def forward_precision(precision: str, device: torch.device) -> Iterator[None]:
    """Run the enclosed forward pass in `precision` (`fp32` or `bf16`, as `resolve_precision` gives)."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        yield


def shape_bucketed(batch: Batch, time_axis: int, max_frames: int | None = None,
                   multiple: int = LENGTH_MULTIPLE) -> Batch:
    """`batch` zero-padded along `time_axis` of its inputs to a multiple of `multiple` frames (never beyond
    `max_frames`, the encoder's longest input), the new frames masked as padding."""
    frames = batch.inputs.shape[time_axis]
    target = -(-frames // multiple) * multiple
    if max_frames is not None:
        target = min(target, max(max_frames, frames))
    extra = target - frames
    if extra == 0:
        return batch
    padding = [0, 0] * (batch.inputs.dim() - 1 - time_axis) + [0, extra]
    return Batch(F.pad(batch.inputs, padding), F.pad(batch.mask, [0, extra]), batch.labels, batch.index)


def precision_note(precision: str) -> str:
    """One line for a report: what `optim.precision` made the training steps run in on this machine."""
    if resolve_precision(precision) == "bf16":
        return f"training steps: bf16 autocast (optim.precision: {precision}); evaluation and model files float32"
    reason = "; this CPU has no AMX tiles" if precision == "auto" else ""
    return f"training steps: float32 (optim.precision: {precision}{reason})"
