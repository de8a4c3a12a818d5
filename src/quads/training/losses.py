"""Distillation: the losses that let a frozen teacher keep teaching the student.

    L_dis = alpha * L1(z_teacher, P(z_student)) + (1 - alpha) * CE(y, head(z_student))   [+ KL at temperature T]
            (distill.target = frames: the L1 term compares every frame, teacher frames resampled to the student's)
    L     = gamma * L_dis + (1 - gamma) * (lambda * L_centroid + CE)                       (quantization stages)

Everything here is expressed as `LossWeights`, the coefficient of each term in one stage, so the training
loop needs no knowledge of recipes. The centroid term is applied by the quantizer (it acts on weights, not
on activations); its coefficient travels here with the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quads.config import DistillConfig, QuantConfig


@dataclass(frozen=True)
class LossWeights:
    """Coefficients of the loss terms in one training stage."""

    ce: float = 1.0
    embedding: float = 0.0  # L1 between teacher embedding and projected student embedding
    logits: float = 0.0  # KL(teacher || student) at temperature T, times T^2
    centroid: float = 0.0  # mean squared distance of weights to their centroids
    temperature: float = 2.0

    @property
    def uses_teacher(self) -> bool:
        return self.embedding > 0 or self.logits > 0


def ce_weights() -> LossWeights:
    """Plain supervised training: the student fp32 baseline and stage 0 of the teacher."""
    return LossWeights(ce=1.0)


def distillation_weights(distill: DistillConfig) -> LossWeights:
    """L_dis: alpha * L1 + (1 - alpha) * CE, plus the optional logit term."""
    return LossWeights(
        ce=1.0 - distill.alpha,
        embedding=distill.alpha,
        logits=distill.logit_weight,
        temperature=distill.temperature,
    )


def quantization_weights(distill: DistillConfig, quant: QuantConfig, *, with_teacher: bool) -> LossWeights:
    """gamma * L_dis + (1 - gamma) * (lambda * L_centroid + CE); without a teacher, L_centroid + CE."""
    if not with_teacher:
        return LossWeights(ce=1.0, centroid=quant.centroid_weight, temperature=distill.temperature)
    dis = distillation_weights(distill)
    gamma = quant.gamma
    return LossWeights(
        ce=gamma * dis.ce + (1.0 - gamma),
        embedding=gamma * dis.embedding,
        logits=gamma * dis.logits,
        centroid=(1.0 - gamma) * quant.centroid_weight,
        temperature=distill.temperature,
    )


class EmbeddingProjection(nn.Module):
    """P: maps the student's pooled embedding to the teacher's width. Training only; never exported."""

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__()
        self.linear = nn.Linear(student_dim, teacher_dim)

    def forward(self, z_student: Tensor) -> Tensor:
        return self.linear(z_student)


def logit_distillation(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """KL(softmax(t/T) || softmax(s/T)) * T^2, summed over classes and per example (not averaged)."""
    teacher_probs = F.softmax(teacher_logits / temperature, dim=-1)
    student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)
    kl = (teacher_probs * (torch.log(teacher_probs.clamp_min(1e-12)) - student_log_probs)).sum(-1)
    return kl * temperature**2


def frame_l1(projected: Tensor, target: Tensor, frame_mask: Tensor) -> Tensor:
    """Per-example mean |target - P(frames)| over the real frames and the teacher's dimensions: [B]."""
    weights = frame_mask.to(projected.dtype)
    per_frame = (projected - target).abs().mean(-1) * weights
    return per_frame.sum(1) / weights.sum(1).clamp_min(1.0)


def align_frames(teacher_frames: list[Tensor], frame_mask: Tensor) -> Tensor:
    """Each utterance's teacher frames [T_i, D] resampled (linear in time) to its student frame count:
    [B, T', D], zero past each student's real frames. Same frame rates (a student cut from the teacher) copy."""
    batch, length = frame_mask.shape
    lengths = frame_mask.sum(1).tolist()
    out = torch.zeros(batch, length, teacher_frames[0].shape[-1])
    for row, (frames, count) in enumerate(zip(teacher_frames, lengths, strict=True)):
        if count == 0:
            continue
        frames = frames.float()
        if frames.shape[0] != count:
            frames = F.interpolate(frames.T[None], size=count, mode="linear", align_corners=True)[0].T
        out[row, :count] = frames
    return out


def per_example_loss(
    weights: LossWeights,
    logits: Tensor,
    labels: Tensor,
    projected: Tensor | None = None,
    teacher_embedding: Tensor | None = None,
    teacher_logits: Tensor | None = None,
    frame_mask: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The stage's loss for each example of a batch (the loop sums these and divides by the global batch).

    `projected` is P(z) [B, D] for pooled distillation, or P(frames) [B, T', D] with `frame_mask` for
    frame-level distillation (then `teacher_embedding` holds the aligned teacher frames).
    Returns the per-example total and the per-example value of each active term for logging.
    """
    terms = {"ce": F.cross_entropy(logits, labels, reduction="none")}
    total = weights.ce * terms["ce"]
    if weights.embedding > 0:
        if projected is None or teacher_embedding is None:
            raise ValueError("embedding distillation needs the projected student and the teacher embeddings")
        if projected.ndim == 3:
            if frame_mask is None:
                raise ValueError("frame-level distillation needs the student's frame mask")
            terms["l1"] = frame_l1(projected, teacher_embedding, frame_mask)
        else:
            terms["l1"] = (projected - teacher_embedding).abs().mean(-1)
        total = total + weights.embedding * terms["l1"]
    if weights.logits > 0:
        if teacher_logits is None:
            raise ValueError("logit distillation needs the teacher logits")
        terms["kl"] = logit_distillation(logits, teacher_logits, weights.temperature)
        total = total + weights.logits * terms["kl"]
    return total, terms
