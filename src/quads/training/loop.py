"""The training loop, explicit from top to bottom: batch, forward, loss, backward, (quantizer), step, log, checkpoint.

QUADS acts *between* optimizer steps, so the order of operations is spelled out here rather than hidden in a
framework. One loop serves every stage of every recipe; a `Stage` says which loss terms are active and whether
the student's weights live on codebooks:

    for each step:   swap in snapped weights (quantize stages) -> forward -> per-example loss -> backward
                     -> restore latent weights, add the centroid-loss gradient -> clip -> AdamW step
                     -> update centroids
    each epoch:      validate (with snapped weights) -> record the latent spread -> keep the best
                     -> re-assign weights to their nearest centroids (quantize stages, not their last epoch)
                     -> atomic checkpoint (resumable)
    end of a quantize stage: hard-snap, so the next stage starts from the quantized weights

Distributed (`quads.training.distributed`): under `torchrun` each process takes its share of every global batch
and DDP averages gradients; the loss is scaled so that N processes compute exactly the gradient of one process on
the global batch. Checkpoints, the optimizer, the record and the inference helpers live in modules of their own.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from quads.config import OptimConfig
from quads.errors import ConfigError, QuadsError
from quads.training.batches import ExampleSet, batch_loader, global_batches
from quads.training.checkpoints import CHECKPOINT_VERSION, CheckpointMismatch, load_checkpoint, save_checkpoint
from quads.training.distributed import Distributed
from quads.training.feature_augment import frequency_warp, spec_augment
from quads.training.inference import classifier_outputs, evaluate_accuracy
from quads.training.logs import TensorBoardLog, write_metrics_csv
from quads.training.losses import EmbeddingProjection, LossWeights, align_frames, per_example_loss
from quads.training.optimizer import learning_rate_factor, make_optimizer
from quads.training.precision import forward_precision, resolve_precision, shape_bucketed

logger = logging.getLogger(__name__)

AUGMENT_SEED_STRIDE = 7919  # a prime: epoch e of seed s draws its SpecAugment masks from seed s * 7919 + e


def augment_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's SpecAugment generator: distinct for every (seed, epoch) of a run."""
    return seed * AUGMENT_SEED_STRIDE + epoch


class TrainingDiverged(QuadsError):
    """The loss became NaN or infinite; training stops instead of writing garbage weights."""


@dataclass(frozen=True)
class Stage:
    """A run of epochs with one set of loss weights; `quantize` puts the student's weights on codebooks."""

    name: str
    epochs: int
    weights: LossWeights
    quantize: bool = False


@dataclass
class TeacherTargets:
    """The frozen teacher's outputs for each training example, computed once per run (index-aligned)."""

    embeddings: Tensor  # [N, D_teacher]
    logits: Tensor | None = None  # [N, C]
    frames: list[Tensor] | None = None  # [T_i, D_teacher] per example: frame-level distillation targets


@dataclass
class FitResult:
    best_epoch: int
    best_valid_accuracy: float
    history: list[dict[str, float]]
    model_state: dict[str, Tensor]  # the selected weights (on the codebooks for a quantized run)
    quantizer_state: dict[str, Any] | None
    projection_state: dict[str, Tensor] | None = None  # P of the kept epoch (carried into the next recipe)


class StudentWithProjection(nn.Module):
    """The trained module: the classifier plus (optionally) the projection P, so DDP sees both.

    P maps the pooled embedding z, or with `frame_level` every encoder frame, to the teacher's width."""

    def __init__(self, classifier: nn.Module, projection: EmbeddingProjection | None, frame_level: bool = False):
        super().__init__()
        self.classifier = classifier
        self.projection = projection
        self.frame_level = frame_level

    def forward(self, inputs: Tensor, mask: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """(logits, P(z) or P(frames) or None, the student's frame mask when frame-level)."""
        output = self.classifier(inputs, mask)
        logits, embedding = classifier_outputs(output)
        if self.projection is None:
            return logits, None, None
        if self.frame_level:
            return logits, self.projection(output.frames), output.frame_mask
        return logits, self.projection(embedding), None


QuantizerFactory = Callable[[nn.Module], Any]


def snapped_if(quantizer: Any | None) -> contextlib.AbstractContextManager:
    """The model's weights on their codebooks while inside (a quantize stage's quantizer), else unchanged."""
    return quantizer.snapped() if quantizer is not None else contextlib.nullcontext()


def bind_quantizer(quantizer: Any | None, factory: QuantizerFactory, classifier: nn.Module, first_epoch_of_stage: bool,
                   resumed_state: dict[str, Any] | None) -> Any:
    """The quantizer of a quantize-stage epoch: made on first use; its codebooks refitted at the start of each
    stage, or restored when resuming in the middle of one."""
    if quantizer is None:
        quantizer = factory(classifier)
    if first_epoch_of_stage:
        quantizer.reassign()
    elif resumed_state is not None:
        quantizer.load_state_dict(resumed_state)  # resuming in the middle of a quantize stage
    return quantizer


def resume_state(checkpoint_path: Path, module: nn.Module, optimizer: torch.optim.Optimizer, fingerprint: str,
                 settings: dict[str, Any] | None) -> dict[str, Any]:
    """Restore the module, optimizer and RNG from `checkpoint_path` and return the loop's state there; a
    checkpoint of another configuration is refused, naming the settings that differ."""
    checkpoint = load_checkpoint(checkpoint_path)
    if checkpoint.get("fingerprint") != fingerprint:
        from quads.config import changed_settings

        changes = changed_settings(checkpoint.get("settings"), settings)
        what = f"other settings: {'; '.join(changes)}" if changes else (
            f"a different configuration (fingerprint {checkpoint.get('fingerprint')} != {fingerprint})")
        raise CheckpointMismatch(f"{checkpoint_path} was written with {what}; use a new --out or drop --resume")
    module.load_state_dict(checkpoint["module"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    torch.set_rng_state(checkpoint["rng"])
    return {key: checkpoint[key] for key in ("epoch", "step", "history", "best", "quantizer")}


def best_so_far(best: dict[str, Any] | None, epoch: int, valid_accuracy: float, classifier: nn.Module,
                quantizer: Any | None, valid_loss: float, projection: nn.Module | None = None) -> dict[str, Any]:
    """The best epoch after this one: this epoch when its validation accuracy is higher, or as high at a lower
    validation loss (its weights taken on the codebooks in a quantize stage, with the quantizer's state), else
    `best`. The projection P is kept from the same epoch, so the next recipe gets the pair that belongs
    together. The loss breaks ties because a small valid split saturates: on the synthetic digits every epoch
    from the first scored 99.5 %, and the first-epoch student kept by accuracy alone heard FSDD's real
    speakers at 87.6 % against 89.4 % for the lowest-loss (last) one."""
    if best is not None and (valid_accuracy, -valid_loss) <= (best["valid_accuracy"],
                                                               -best.get("valid_loss", float("inf"))):
        return best
    with snapped_if(quantizer):
        selected = {k: v.detach().clone() for k, v in classifier.state_dict().items()}
    return {"epoch": epoch + 1, "valid_accuracy": valid_accuracy, "valid_loss": valid_loss, "model": selected,
            "quantizer": None if quantizer is None else quantizer.state_dict(),
            "projection": None if projection is None else _detached(projection)}


def _detached(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def save_epoch(run_dir: Path, state: dict[str, Any], module: nn.Module, optimizer: torch.optim.Optimizer,
               fingerprint: str, settings: dict[str, Any] | None) -> None:
    """The end-of-epoch checkpoint (everything a bit-exact resume needs) and the metrics written so far."""
    save_checkpoint(run_dir / "last.pt", {
        "version": CHECKPOINT_VERSION, "fingerprint": fingerprint, "settings": settings,
        "module": module.state_dict(),
        "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(), **state})
    write_metrics_csv(run_dir / "metrics.csv", state["history"])


def check_stages(stages: list[Stage]) -> None:
    for index, stage in enumerate(stages):
        if stage.epochs < 1:
            raise ConfigError(f"stage {index} ('{stage.name}') has {stage.epochs} epochs; every stage of a schedule "
                              "needs at least one (quant.schedule, quant.epochs or optim.epochs)")
        if stage.weights.centroid < 0:
            raise ConfigError(f"stage {index} ('{stage.name}'): the centroid coefficient (quant.centroid_weight) "
                              f"must be >= 0, got {stage.weights.centroid}")
    if not stages:
        raise ConfigError("fit() needs at least one stage")


def fit(
    classifier: nn.Module,
    train_set: ExampleSet,
    valid_set: ExampleSet,
    stages: list[Stage],
    optim: OptimConfig,
    run_dir: str | Path,
    *,
    seed: int = 0,
    teacher: TeacherTargets | None = None,
    quantizer_factory: QuantizerFactory | None = None,
    fingerprint: str = "",
    resume: bool = False,
    progress: bool = True,
    augment: bool | None = None,
    description: str = "train",
    distributed: bool = True,
    projection_state: dict[str, Tensor] | None = None,
    settings: dict[str, Any] | None = None,
    loader_workers: int = 0,
) -> FitResult:
    """Train `classifier` through `stages`, checkpointing every epoch into `run_dir`.

    `classifier(inputs, mask)` returns (logits, pooled embedding). Teacher targets are index-aligned with
    `train_set`. A quantize stage needs `quantizer_factory(classifier) -> CodebookQuantizer`. The best epoch
    (by validation accuracy) is selected among the epochs of the *last* stage, so a quantized run always ends
    with weights on its codebooks. With `resume=True` the run continues from `run_dir/last.pt` bit-for-bit;
    `settings` (the run's config as a dict) is saved with each checkpoint so that resuming under another
    `fingerprint` names the keys that differ.
    Batches are read through a DataLoader (`loader_workers` processes read ahead; the order never changes).
    """
    run_dir = Path(run_dir)
    check_stages(stages)
    world = Distributed(enabled=distributed)
    torch.manual_seed(seed)
    needs_teacher = any(stage.weights.uses_teacher for stage in stages)
    if needs_teacher and teacher is None:
        raise QuadsError("a distillation stage needs teacher targets, but none were given")
    if any(stage.quantize for stage in stages) and quantizer_factory is None:
        raise QuadsError("a quantize stage needs a quantizer factory")
    if teacher is not None and len(teacher.embeddings) != len(train_set):
        raise QuadsError(f"teacher targets cover {len(teacher.embeddings)} utterances, the train set has "
                         f"{len(train_set)}: the teacher cache belongs to another corpus")

    projection = None
    frame_level = teacher is not None and teacher.frames is not None
    if needs_teacher and any(stage.weights.embedding > 0 for stage in stages):
        with torch.no_grad():
            probe = train_set.collate([0])
            _, embedding = classifier_outputs(classifier.eval()(probe.inputs, probe.mask))
        classifier.train()
        teacher_dim = teacher.frames[0].shape[-1] if frame_level else teacher.embeddings.shape[-1]
        projection = EmbeddingProjection(embedding.shape[-1], teacher_dim)
        if projection_state is not None:  # P carried over from the distilled student this run starts from
            try:
                projection.load_state_dict(projection_state)
            except RuntimeError:
                logger.warning("the carried-over projection P does not fit this teacher/student; P starts afresh")
    module = StudentWithProjection(classifier, projection, frame_level)
    optimizer = make_optimizer(module, optim)
    trained: nn.Module = module
    if world.world_size > 1:
        trained = nn.parallel.DistributedDataParallel(module)

    lengths = train_set.lengths if optim.bucket_by_length else None
    batches_per_epoch = len(global_batches(len(train_set), optim.batch_size, seed, 0, world.world_size, lengths))
    if batches_per_epoch == 0:
        raise QuadsError(f"the train set has {len(train_set)} utterances, fewer than one batch")
    total_epochs = sum(stage.epochs for stage in stages)
    total_steps = total_epochs * batches_per_epoch
    warmup_steps = int(optim.warmup_epochs * batches_per_epoch)
    use_augment = optim.spec_augment if augment is None else augment
    precision = resolve_precision(optim.precision)
    max_frames = getattr(getattr(classifier, "encoder", None), "max_input_frames", None)

    state = {"epoch": 0, "step": 0, "history": [], "best": None, "quantizer": None}
    quantizer = None  # made at the first quantize stage, kept across stages
    resumed_quantizer_state = None
    checkpoint_path = run_dir / "last.pt"
    if resume and checkpoint_path.exists():
        state = resume_state(checkpoint_path, module, optimizer, fingerprint, settings)
        resumed_quantizer_state = state["quantizer"]
    elif world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)

    tensorboard = TensorBoardLog(run_dir / "tensorboard" if world.is_main else None)
    epoch_stage = [(index, stage) for index, stage in enumerate(stages) for _ in range(stage.epochs)]
    last_stage_index = len(stages) - 1
    step = state["step"]

    for epoch in range(state["epoch"], total_epochs):
        stage_index, stage = epoch_stage[epoch]
        first_epoch_of_stage = epoch == 0 or epoch_stage[epoch - 1][0] != stage_index
        active = None  # this epoch's quantizer: None outside quantize stages
        if stage.quantize:
            quantizer = active = bind_quantizer(quantizer, quantizer_factory, classifier, first_epoch_of_stage,
                                                resumed_quantizer_state)
            resumed_quantizer_state = None
        weights = stage.weights
        sums = torch.zeros(5, dtype=torch.float64)  # loss, ce, correct, examples, l1
        batches = global_batches(len(train_set), optim.batch_size, seed, epoch, world.world_size, lengths)
        generator = torch.Generator().manual_seed(augment_seed(seed, epoch))
        bar = tqdm(batches, desc=f"{description} {epoch + 1}/{total_epochs} [{stage.name}]", leave=False,
                   disable=not (progress and world.is_main), unit="batch")
        module.train()
        loader = batch_loader(train_set, batches, world.rank, world.world_size, loader_workers)
        for global_batch, batch in zip(bar, loader, strict=True):
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * learning_rate_factor(
                    step, total_steps, warmup_steps, optim.min_lr_ratio)
            if use_augment and train_set.time_dim == 1:
                if optim.frequency_warp > 0:
                    batch = frequency_warp(batch, generator, optim.frequency_warp)
                batch = spec_augment(batch, generator)
            if precision == "bf16":
                batch = shape_bucketed(batch, 2 if train_set.time_dim == 1 else 1, max_frames)
            if active is not None:
                active.swap_in_snapped()
            with forward_precision(precision, batch.inputs.device):
                logits, projected, frame_mask = trained(batch.inputs, batch.mask)
            # losses in float32 whatever the forward ran in (a no-op for float32 outputs)
            logits, projected = logits.float(), None if projected is None else projected.float()
            target_embedding = None
            if projected is not None and frame_level:
                target_embedding = align_frames([teacher.frames[i] for i in batch.index.tolist()], frame_mask)
            elif teacher is not None:
                target_embedding = teacher.embeddings[batch.index]
            target_logits = teacher.logits[batch.index] if teacher is not None and teacher.logits is not None else None
            per_example, terms = per_example_loss(weights, logits, batch.labels, projected, target_embedding,
                                                  target_logits, frame_mask)
            # DDP averages gradients over ranks; scaling by world/global makes that the global-batch mean.
            loss = per_example.sum() * (world.world_size / len(global_batch))
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"{description}: the loss became {float(loss)} at epoch {epoch + 1}, step {step + 1} "
                    f"(stage '{stage.name}'); lower optim.lr or check the data. The last good checkpoint is "
                    f"{checkpoint_path}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            spread = 0.0
            if active is not None:
                active.restore_latent()
                spread = active.add_centroid_gradient(weights.centroid)
            if optim.grad_clip > 0:
                nn.utils.clip_grad_norm_(module.parameters(), optim.grad_clip)
            optimizer.step()
            if active is not None:
                active.update_centroids()
            step += 1
            l1 = float(terms["l1"].detach().sum()) if "l1" in terms else 0.0
            sums += torch.tensor([float(per_example.detach().sum()), float(terms["ce"].detach().sum()),
                                  float((logits.argmax(-1) == batch.labels).sum()), len(batch.labels), l1],
                                 dtype=torch.float64)
            bar.set_postfix(loss=f"{float(per_example.detach().mean()):.3f}", spread=f"{spread:.2e}")
        bar.close()
        sums = world.all_sum(sums)

        with snapped_if(active):
            valid_accuracy, valid_loss = evaluate_accuracy(classifier, valid_set)
        row = {
            "epoch": epoch + 1,
            "stage": stage.name,
            "stage_index": stage_index,
            "train_loss": float(sums[0] / sums[3]),
            "train_ce": float(sums[1] / sums[3]),
            "train_accuracy": float(sums[2] / sums[3]),
            **({"train_l1": float(sums[4] / sums[3])} if weights.embedding > 0 else {}),
            "valid_loss": valid_loss,
            "valid_accuracy": valid_accuracy,
            "lr": optimizer.param_groups[0]["lr"],
            # before the hard snap or the re-assignment below: the spread the centroid term controls
            **({"latent_spread": active.latent_spread()} if active is not None else {}),
        }
        state["history"].append(row)
        if stage_index == last_stage_index:  # the best epoch is one of the last stage's
            state["best"] = best_so_far(state["best"], epoch, valid_accuracy, classifier, active, valid_loss,
                                        projection)
        last_epoch_of_stage = epoch + 1 == total_epochs or epoch_stage[epoch + 1][0] != stage_index
        if active is not None and last_epoch_of_stage:
            active.hard_snap()  # the next stage starts from the quantized weights
        elif active is not None:
            row["reassigned"] = active.reassign_to_nearest()  # weights the CE drift moved to another cluster
        state["quantizer"] = None if active is None else active.state_dict()
        state["epoch"] = epoch + 1
        state["step"] = step
        if world.is_main:
            save_epoch(run_dir, state, module, optimizer, fingerprint, settings)
            tensorboard.add(row, epoch + 1)
            if progress:
                tqdm.write(f"{description} epoch {epoch + 1}/{total_epochs} [{stage.name}] "
                           f"train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.3f} | "
                           f"valid acc {valid_accuracy:.3f}")
        world.barrier()
    tensorboard.close()
    best = state["best"]
    classifier.load_state_dict(best["model"])
    # P of the kept epoch (a checkpoint from before it was kept there: P at the end)
    projection_out = best.get("projection") or (None if projection is None else _detached(projection))
    return FitResult(best_epoch=best["epoch"], best_valid_accuracy=best["valid_accuracy"], history=state["history"],
                     model_state=best["model"], quantizer_state=best["quantizer"], projection_state=projection_out)
