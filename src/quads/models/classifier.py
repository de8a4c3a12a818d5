"""The student: an encoder, pooling over time (masked mean, the paper's, or attention), an intent head (Φ)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from quads.models.encoder import Encoder
from quads.models.head import ClassifierOutput, build_head
from quads.models.pooling import build_pooling, pool


class IntentClassifier(nn.Module):
    """log-mel features + mask -> intent logits and the pooled utterance embedding z."""

    def __init__(
        self,
        encoder: Encoder,
        num_labels: int,
        head: str = "linear",
        head_hidden_dim: int | None = None,
        head_dropout: float = 0.1,
        pooling: str = "mean",
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.num_labels = num_labels
        self.head_kind, self.head_hidden_dim, self.head_dropout = head, head_hidden_dim, head_dropout
        self.pooling_kind = pooling
        self.pooling = build_pooling(pooling, encoder.embed_dim)
        self.head = build_head(head, encoder.embed_dim, num_labels, head_hidden_dim, head_dropout)

    @property
    def embed_dim(self) -> int:
        return self.encoder.embed_dim

    @property
    def n_mels(self) -> int:
        return self.encoder.n_mels

    def forward(self, features: Tensor, mask: Tensor) -> ClassifierOutput:
        frames, frame_mask = self.encoder(features, mask)
        embedding = pool(self.pooling, frames, frame_mask)
        return ClassifierOutput(self.head(embedding), embedding, frames, frame_mask)

    def num_parameters(self) -> int:
        """Encoder + head: what the paper's parameter column counts (a distillation projection is not part of it)."""
        return sum(parameter.numel() for parameter in self.parameters())

    def config_dict(self) -> dict[str, Any]:
        """JSON-able; `quads.models.registry.build_classifier` rebuilds the same architecture from it."""
        return {
            "encoder": self.encoder.config_dict(),
            "num_labels": self.num_labels,
            "head": {
                "kind": self.head_kind,
                "hidden_dim": self.head_hidden_dim,
                "dropout": self.head_dropout,
                **({"pooling": self.pooling_kind} if self.pooling_kind != "mean" else {}),
            },
        }
