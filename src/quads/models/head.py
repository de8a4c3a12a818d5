"""Intent heads: from an utterance embedding (students) or from frozen frame embeddings (teachers) to logits.

Student heads act on the pooled embedding z: "linear" (the paper's) or "mlp" (one GELU hidden layer).

`TeacherHead` sits on a frozen teacher's cached frame embeddings [B, T', D]. Its pooled embedding z (the
distillation target) is always the masked mean of the frames *as given to its pooling*:
- "linear" and "mlp": z = mean of the teacher's own frame embeddings (the head adds nothing before pooling);
- "attention": z = mean of the frames after one positional self-attention block (sinusoidal positions, pre-LN,
  residual), so z can carry word order, e.g. "turn on the lights" vs "lights on, turn...". z keeps the width D.
- "attnpool": z = attention pooling of the teacher's own frames (`quads.models.pooling.AttentionPool`): it finds
  the word a command hangs on at O(T·D) cost, for contextual teachers such as Whisper whose frames already
  carry word order (the "attention" block is ~100x more compute per frame at Whisper's width).
- "slots": one attention pooling and classifier per slot of the intent label (`quads.models.slots.SlotHead`);
  z = the mean of the slots' pooled vectors.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from quads.errors import ConfigError
from quads.models.encoder import masked_mean_pool
from quads.models.pooling import AttentionPool, default_heads
from quads.models.slots import SlotHead
from quads.models.transformer import TransformerBlock, attention_bias, sinusoidal_positions

STUDENT_HEAD_KINDS = ("linear", "mlp", "norm", "slots")  # slots: `quads.models.slots`, built by IntentClassifier
TEACHER_HEAD_KINDS = ("linear", "mlp", "attention", "attnpool", "slots")


def build_head(
    kind: str, embed_dim: int, num_labels: int, hidden_dim: int | None = None, dropout: float = 0.1
) -> nn.Module:
    """An intent head on a pooled embedding [B, D] -> logits [B, C]."""
    _check_sizes(embed_dim, num_labels)
    if kind == "linear":
        return nn.Linear(embed_dim, num_labels)
    if kind == "norm":  # LayerNorm + linear: the layout of the attnpool teacher head's classifier (copyable)
        return nn.Sequential(nn.LayerNorm(embed_dim), nn.Dropout(dropout), nn.Linear(embed_dim, num_labels))
    if kind == "mlp":
        hidden = hidden_dim or embed_dim
        if hidden <= 0:
            raise ConfigError(f"mlp head: hidden_dim must be a positive integer, got {hidden}")
        return nn.Sequential(
            nn.Linear(embed_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, num_labels)
        )
    raise ConfigError(f"unknown head {kind!r}; expected one of {', '.join(STUDENT_HEAD_KINDS)}")


def _check_sizes(embed_dim: int, num_labels: int) -> None:
    if not isinstance(embed_dim, int) or embed_dim <= 0:
        raise ConfigError(f"head: embed_dim must be a positive integer, got {embed_dim!r}")
    if not isinstance(num_labels, int) or num_labels < 2:
        raise ConfigError(f"head: num_labels must be an integer >= 2 (intents to choose between), got {num_labels!r}")


class ClassifierOutput(NamedTuple):
    """What every intent model returns: the student (`IntentClassifier`) and the teacher's head alike."""

    logits: Tensor  # [B, C]
    embedding: Tensor  # [B, D]: z, the pooled frames (what utterance-level distillation compares)
    frames: Tensor | None = None  # [B, T', D]: the encoder's frames (what frame-level distillation compares)
    frame_mask: Tensor | None = None  # [B, T']


class TeacherHead(nn.Module):
    """The trainable part of a teacher: cached frame embeddings [B, T', D] + mask [B, T'] -> (logits, z)."""

    def __init__(
        self,
        embed_dim: int,
        num_labels: int,
        kind: str = "linear",
        hidden_dim: int | None = None,
        n_heads: int | None = None,
        dropout: float = 0.1,
        slots: list[list[int]] | None = None,
    ) -> None:
        super().__init__()
        if kind not in TEACHER_HEAD_KINDS:
            raise ConfigError(f"unknown teacher head {kind!r}; expected one of {', '.join(TEACHER_HEAD_KINDS)}")
        _check_sizes(embed_dim, num_labels)
        self.kind, self.embed_dim, self.num_labels = kind, embed_dim, num_labels
        self.hidden_dim, self.dropout = hidden_dim, dropout
        self.context: TransformerBlock | None = None
        self.pool: AttentionPool | None = None
        self.slots: SlotHead | None = None
        if kind == "slots":
            if slots is None or len(slots) != num_labels:
                raise ConfigError(f"slots teacher head: needs a slot layout with one entry per intent ({num_labels})")
            self.n_heads = default_heads(embed_dim)
            self.slots = SlotHead(embed_dim, slots, dropout)
        elif kind == "attnpool":
            self.n_heads = n_heads or default_heads(embed_dim)
            self.pool = AttentionPool(embed_dim, self.n_heads)
            self.classifier = build_head("norm", embed_dim, num_labels, dropout=dropout)
        elif kind == "attention":
            heads = n_heads or default_heads(embed_dim)
            if embed_dim % heads or embed_dim % 2:
                raise ConfigError(
                    f"attention teacher head: embed_dim = {embed_dim} must be even and divisible by n_heads = {heads}"
                )
            self.n_heads = heads
            self.input_norm = nn.LayerNorm(embed_dim)
            self.context = TransformerBlock(embed_dim, heads, hidden_dim or 2 * embed_dim, dropout)
            self.classifier = build_head("norm", embed_dim, num_labels, dropout=dropout)
        else:
            self.n_heads = None
            self.classifier = build_head(kind, embed_dim, num_labels, hidden_dim, dropout)

    def forward(self, frames: Tensor, frame_mask: Tensor) -> ClassifierOutput:
        if frames.ndim != 3 or frames.shape[-1] != self.embed_dim:
            raise ConfigError(
                f"teacher head expects frame embeddings [batch, frames, {self.embed_dim}], got {tuple(frames.shape)}"
            )
        if self.context is not None:
            x = self.input_norm(frames)
            x = x + sinusoidal_positions(x.shape[1], self.embed_dim, x.device).to(x.dtype)
            frames = self.context(x, attention_bias(frame_mask, x.dtype))
        if self.slots is not None:
            return ClassifierOutput(*self.slots(frames, frame_mask))
        embedding = self.pool(frames, frame_mask) if self.pool is not None else masked_mean_pool(frames, frame_mask)
        return ClassifierOutput(self.classifier(embedding), embedding)

    def config_dict(self) -> dict:
        return {
            "kind": self.kind,
            "embed_dim": self.embed_dim,
            "num_labels": self.num_labels,
            "hidden_dim": self.hidden_dim,
            "n_heads": self.n_heads,
            "dropout": self.dropout,
            **({"slots": self.slots.layout} if self.slots is not None else {}),
        }
