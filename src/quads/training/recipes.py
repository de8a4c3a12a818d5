"""Compression recipes as lists of training stages: QUADS and the baselines it is measured against.

| recipe       | starts from (quant.init: pretrained) | stages                                                  |
|--------------|--------------------------------------|---------------------------------------------------------|
| `fp32`       | scratch                              | CE only (the student fp32 baseline), optim.epochs       |
| `distill`    | scratch                              | L_dis throughout (student + distillation, fp32)         |
| `ptq`        | the distilled student                | none: k-means codebooks fitted once, weights snapped    |
| `qat`        | the CE-only student                  | the schedule without any teacher: CE, L_centroid + CE   |
| `sequential` | the distilled student                | quantize stages with L_centroid + CE (teacher gone)     |
| `quads`      | the distilled student                | quantize with L_dis + L_centroid + CE (teacher throughout) |

The quantizing recipes train `quant.epochs` epochs (`quant.low_bit_epochs` at 2 bits or fewer, when set) on top of
their starting student, with the same budget:
QUADS and QAT follow the schedule, sequential spends all of them quantizing without the teacher. With
quant.init = scratch they start from random weights and follow the schedule over optim.epochs (the paper's
setting); sequential then distils for the schedule's distil epochs, then quantizes for its quantize epochs.

Equal-budget controls (`equal_budget`): the fp32 and distilled students trained for as many epochs in total as
a quantizing recipe spends (its starting student's plus its own), in one schedule (one warm-up, one cosine),
so "QUADS beats the fp32 student" cannot be just more training.

At 16 and 32 bits nothing is clustered: every recipe trains as its fp32 counterpart and 16 bits is a float16
cast at export.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from quads.config import RunConfig, parse_schedule
from quads.errors import ConfigError
from quads.training.loop import Stage
from quads.training.losses import ce_weights, distillation_weights, quantization_weights

RECIPES = ("fp32", "distill", "ptq", "qat", "sequential", "quads")

# The public reference's 20 epochs: distil 1-3, quantize 4-6, distil 7-12, quantize 13-20.
PAPER_PATTERN = (("distill", 3), ("quantize", 3), ("distill", 6), ("quantize", 8))
LOW_BITS = 2  # codebooks of this many bits or fewer train at their own learning rate (quant.low_bit_lr)


@dataclass(frozen=True)
class RecipePlan:
    """What a recipe trains: its stages, which fp32 student it starts from ("fp32", "distill" or None for
    random weights), and whether it only clusters the weights once after training (PTQ)."""

    recipe: str
    bits: int
    stages: tuple[Stage, ...]
    start_from: str | None = None
    post_training_only: bool = False

    @property
    def uses_teacher(self) -> bool:
        return any(stage.weights.uses_teacher for stage in self.stages)


def paper_schedule(total_epochs: int) -> list[tuple[str, int]]:
    """The paper's distil/quantize/distil/quantize pattern scaled to `total_epochs`, ending on quantize."""
    if total_epochs < 1:
        raise ConfigError("optim.epochs must be >= 1")
    if total_epochs == 1:
        return [("quantize", 1)]
    if total_epochs < 4:
        return [("distill", total_epochs - total_epochs // 2), ("quantize", total_epochs // 2)]
    return _scaled(PAPER_PATTERN, total_epochs)


def pretrained_schedule(total_epochs: int) -> list[tuple[str, int]]:
    """What QUADS trains after a distilled student: one quantize stage of `total_epochs`, the teacher teaching
    throughout (L_dis beside CE and the centroid term). The distilled student is the pattern's distil stage.
    Alternating further (quantize, distil, quantize) re-warmed the converged student to the peak rate in its
    distil epoch and lost to this at both widths (docs/METHOD.md, "Schedule")."""
    if total_epochs < 1:
        raise ConfigError("quant.epochs must be >= 1")
    return [("quantize", total_epochs)]


def _scaled(pattern: tuple[tuple[str, int], ...], total_epochs: int) -> list[tuple[str, int]]:
    """`pattern` with each stage's epochs scaled to sum to `total_epochs`, every stage >= 1 epoch."""
    pattern_total = sum(epochs for _, epochs in pattern)
    scaled = [max(1, round(epochs * total_epochs / pattern_total)) for _, epochs in pattern]
    scaled[-1] += total_epochs - sum(scaled)
    while scaled[-1] < 1:  # rounding overshoot on short budgets: take back from the longest distil stage
        longest = max((i for i, (phase, _) in enumerate(pattern) if phase == "distill"), key=lambda i: scaled[i])
        scaled[longest] -= 1
        scaled[-1] += 1
    return [(phase, epochs) for (phase, _), epochs in zip(pattern, scaled, strict=True)]


def schedule_for(config: RunConfig) -> list[tuple[str, int]]:
    """The configured schedule; else, from a pretrained (distilled) student, one quantize stage over
    quant.epochs (`pretrained_schedule`); else the paper's pattern over optim.epochs from scratch."""
    if config.quant.schedule:
        stages = parse_schedule(config.quant.schedule)
    elif config.quant.init != "pretrained":
        stages = paper_schedule(config.optim.epochs)
    else:
        stages = pretrained_schedule(config.quant.epochs)
    if stages[-1][0] != "quantize":
        raise ConfigError("quant.schedule must end on a quantize stage, so the final weights are on the codebook")
    return stages


def plan(recipe: str, config: RunConfig, bits: int | None = None) -> RecipePlan:
    """Turn a recipe name and a config into the stages to train."""
    if recipe not in RECIPES:
        raise ConfigError(f"unknown recipe '{recipe}': choose one of {', '.join(RECIPES)}")
    bits = config.quant.bits if bits is None else bits
    if bits <= LOW_BITS and config.quant.low_bit_epochs:
        config = replace(config, quant=replace(config.quant, epochs=config.quant.low_bit_epochs))
    epochs = config.optim.epochs
    distill = distillation_weights(config.distill)
    pretrained = config.quant.init == "pretrained"
    if recipe == "fp32" or (recipe == "qat" and bits > 8):
        return RecipePlan(recipe, bits, (Stage("ce", epochs, ce_weights()),))
    if recipe == "distill" or (recipe == "quads" and bits > 8):
        return RecipePlan(recipe, bits, (Stage("distill", epochs, distill),))
    if recipe == "ptq" or (recipe == "sequential" and bits > 8):
        return RecipePlan(recipe, bits, (), start_from="distill", post_training_only=bits <= 8)
    schedule = schedule_for(config)
    if recipe == "sequential":
        weights = quantization_weights(config.distill, config.quant, with_teacher=False)
        if pretrained:  # the same epochs as QUADS after the same distilled student, all spent quantizing
            budget = sum(n for _, n in schedule)
            return RecipePlan(recipe, bits, (Stage("quantize", budget, weights, quantize=True),),
                              start_from="distill")
        distill_epochs = sum(n for phase, n in schedule if phase == "distill")
        quantize_epochs = sum(n for phase, n in schedule if phase == "quantize")
        stages = (Stage("distill", distill_epochs, distill), Stage("quantize", quantize_epochs, weights, quantize=True))
        return RecipePlan(recipe, bits, stages)
    with_teacher = recipe == "quads"
    stages = []
    for phase, n in schedule:
        if phase == "distill":
            stages.append(Stage("distill" if with_teacher else "ce", n, distill if with_teacher else ce_weights()))
        else:
            weights = quantization_weights(config.distill, config.quant, with_teacher=with_teacher)
            stages.append(Stage("quantize", n, weights, quantize=True))
    start_from = ("distill" if with_teacher else "fp32") if pretrained else None
    return RecipePlan(recipe, bits, tuple(stages), start_from=start_from)


def quantizing_epochs(config: RunConfig) -> int:
    """Total epochs behind a quantizing recipe's student: its schedule, plus the fp32 student it starts from."""
    schedule_epochs = sum(n for _, n in schedule_for(config))
    return schedule_epochs + (config.optim.epochs if config.quant.init == "pretrained" else 0)


def equal_budget(config: RunConfig) -> RunConfig:
    """The config of an equal-budget fp32/distill control: optim.epochs = `quantizing_epochs(config)`."""
    return replace(config, optim=replace(config.optim, epochs=quantizing_epochs(config)))
