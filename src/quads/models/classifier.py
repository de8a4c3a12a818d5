"""The student: an encoder, pooling over time (masked mean, the paper's, or attention), an intent head (Φ);
or, with head "slots", one attention pooling and classifier per slot of the intent label (`quads.models.slots`)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from quads.errors import ConfigError
from quads.models.encoder import Encoder
from quads.models.head import ClassifierOutput, build_head
from quads.models.pooling import build_pooling, pool
from quads.models.slots import SlotHead


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
        slots: list[list[int]] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.num_labels = num_labels
        self.head_kind, self.head_hidden_dim, self.head_dropout = head, head_hidden_dim, head_dropout
        self.head: nn.Module
        if head == "slots":  # pools of its own, one per slot: `pooling` does not apply
            if slots is None or len(slots) != num_labels:
                raise ConfigError(f"slots head: needs a slot layout with one entry per intent ({num_labels})")
            self.pooling_kind, self.pooling = "slots", None
            self.head = SlotHead(encoder.embed_dim, slots, head_dropout)
        else:
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
        if isinstance(self.head, SlotHead):
            logits, embedding = self.head(frames, frame_mask)
            return ClassifierOutput(logits, embedding, frames, frame_mask)
        embedding = pool(self.pooling, frames, frame_mask)
        return ClassifierOutput(self.head(embedding), embedding, frames, frame_mask)

    def num_parameters(self) -> int:
        """Encoder + head: what the paper's parameter column counts (a distillation projection is not part of it)."""
        return sum(parameter.numel() for parameter in self.parameters())

    def config_dict(self) -> dict[str, Any]:
        """JSON-able; `quads.models.registry.build_classifier` rebuilds the same architecture from it."""
        head: dict[str, Any] = {"kind": self.head_kind, "hidden_dim": self.head_hidden_dim,
                                "dropout": self.head_dropout}
        if isinstance(self.head, SlotHead):
            head["slots"] = self.head.layout
        elif self.pooling_kind != "mean":
            head["pooling"] = self.pooling_kind
        return {"encoder": self.encoder.config_dict(), "num_labels": self.num_labels, "head": head}
