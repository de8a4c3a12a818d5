"""From frame embeddings to one utterance vector z: masked mean, or attention pooling.

Mean pooling weighs every frame alike, so a command that hangs on one word among many ("order the *salad*
for delivery at seven") is diluted by the rest of the sentence. `AttentionPool` learns where to listen: each
of its heads scores every real frame, softmax-normalises the scores over time and averages its slice of the
embedding with those weights. It costs O(T·D) (one linear scoring layer), a small fraction of a transformer
block, and z keeps the frames' width D.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from quads.errors import ConfigError
from quads.models.encoder import masked_mean_pool

POOLINGS = ("mean", "attention")


class AttentionPool(nn.Module):
    """Multi-head attention pooling: frames [B, T, D] + mask [B, T] -> z [B, D]; padded frames get no weight."""

    def __init__(self, embed_dim: int, heads: int = 4) -> None:
        super().__init__()
        if heads < 1 or embed_dim % heads:
            raise ConfigError(f"attention pooling: embed_dim = {embed_dim} is not divisible by heads = {heads}")
        self.heads = heads
        self.norm = nn.LayerNorm(embed_dim)
        self.score = nn.Linear(embed_dim, heads)

    def forward(self, frames: Tensor, frame_mask: Tensor) -> Tensor:
        batch, length, dim = frames.shape
        scores = self.score(self.norm(frames)).masked_fill(~frame_mask.unsqueeze(-1), float("-inf"))
        # An utterance without real frames would softmax over -inf only: give it uniform (all-zero) weights.
        empty = ~frame_mask.any(dim=1)
        scores = torch.where(empty[:, None, None], torch.zeros_like(scores), scores)
        weights = torch.softmax(scores, dim=1) * frame_mask.unsqueeze(-1).to(frames.dtype)  # [B, T, H]
        values = frames.reshape(batch, length, self.heads, dim // self.heads)
        return torch.einsum("bth,bthd->bhd", weights, values).reshape(batch, dim)


def default_heads(embed_dim: int) -> int:
    """Attention heads when none are given: 4 where the width divides, else 1."""
    return 4 if embed_dim % 4 == 0 else 1


def build_pooling(kind: str, embed_dim: int) -> nn.Module | None:
    """None for mean pooling (nothing to learn), an AttentionPool for "attention"."""
    if kind == "mean":
        return None
    if kind == "attention":
        return AttentionPool(embed_dim, heads=default_heads(embed_dim))
    raise ConfigError(f"unknown pooling {kind!r}; expected one of {', '.join(POOLINGS)}")


def pool(pooling: nn.Module | None, frames: Tensor, frame_mask: Tensor) -> Tensor:
    return masked_mean_pool(frames, frame_mask) if pooling is None else pooling(frames, frame_mask)
