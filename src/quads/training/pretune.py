"""Stage 0: pre-tune the teacher, i.e. train its intent head on the task with cross-entropy.

The teacher's encoder stays frozen, so the head trains on cached frame embeddings: seconds, not hours, and
the same cache later feeds distillation. The pre-tuned head is saved as safetensors + JSON (no pickle) and
reused by every run on the same corpus and teacher settings.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from quads.atomic import atomic_path
from quads.config import OptimConfig, RunConfig, add_config_arguments, load_config
from quads.data import Corpus
from quads.errors import ConfigError, QuadsError
from quads.models.head import TeacherHead
from quads.models.slots import slot_layout
from quads.training.batches import ExampleSet
from quads.training.experiment import (
    TeacherFrames,
    corpus_fingerprint,
    load_training_corpus,
    teacher_examples,
    write_json,
)
from quads.training.inference import classifier_outputs, evaluate_accuracy, predict_embeddings
from quads.training.loop import Stage, TeacherTargets, fit
from quads.training.losses import ce_weights
from quads.training.shards import ShardedExamples, StandardizedItems, StoreRows, open_or_build

logger = logging.getLogger(__name__)

HEAD_FILE = "teacher_head.safetensors"
META_FILE = "teacher.json"
ENCODER_DIR = "tuned_encoder"
ENCODER_FILE = "encoder.safetensors"


@dataclass
class PretunedTeacher:
    """A frozen teacher encoder's identity plus its trained intent head."""

    spec: str
    head: TeacherHead
    labels: list[str]
    metrics: dict
    fingerprint: str
    encoder_parameters: int = 0

    @property
    def num_parameters(self) -> int:
        return self.encoder_parameters + sum(p.numel() for p in self.head.parameters())


def pretune_fingerprint(config: RunConfig, corpus: Corpus, teacher_identity: str = "") -> str:
    """Identity of a pre-tuned head: teacher settings, seed, corpus and (`teacher_identity`, the frozen
    encoder's `identity()`, a hash of its weights) the teacher it was tuned on."""
    settings = {"teacher": asdict(config.teacher), "seed": config.seed, "corpus": corpus_fingerprint(corpus)}
    if config.teacher.unfreeze:  # the fine-tuning borrows the student's batch size and SpecAugment
        settings["fine_tuning"] = {"batch_size": config.optim.batch_size, "spec_augment": config.optim.spec_augment}
    if teacher_identity:
        settings["weights"] = teacher_identity
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def teacher_identity(teacher) -> str:
    """The frozen teacher's weight hash (`identity()`), or "" for a teacher object without one."""
    identity = getattr(teacher, "identity", None)
    return identity() if callable(identity) else ""


def pretune_teacher(config: RunConfig, corpus: Corpus, frames: TeacherFrames, out_dir: str | Path, *,
                    encoder_parameters: int = 0, resume: bool = False, progress: bool = True,
                    identity: str = "") -> PretunedTeacher:
    """Train the teacher head on the train split, select on valid, report valid and test accuracy.

    A finished pre-tuning in `out_dir` with the same settings, corpus and teacher weights (`identity`, see
    `teacher_identity`) is reused rather than redone; one made with others is redone, with a log line.
    """
    out_dir = Path(out_dir)
    fingerprint = pretune_fingerprint(config, corpus, identity)
    if (out_dir / META_FILE).exists():
        existing = load_pretuned_teacher(out_dir)
        if existing.fingerprint == fingerprint:
            logger.info("reusing the pre-tuned teacher in %s", out_dir)
            return existing
        logger.warning("not reusing the pre-tuned teacher head in %s: it was tuned with other teacher settings, "
                       "corpus or teacher weights; pre-tuning it again", out_dir)
        resume = False
    train_set, valid_set, test_set = (frames.sets[s] for s in ("train", "valid", "test"))
    torch.manual_seed(config.seed)
    slots = slot_layout(list(corpus.label_map.labels)) if config.teacher.head == "slots" else None
    head = TeacherHead(train_set.items[0].shape[-1], len(corpus.label_map), kind=config.teacher.head,
                       dropout=config.teacher.dropout, slots=slots)
    optim = OptimConfig(epochs=config.teacher.epochs, batch_size=config.teacher.batch_size, lr=config.teacher.lr,
                        weight_decay=config.teacher.weight_decay, warmup_epochs=1.0, spec_augment=False)
    result = fit(head, train_set, valid_set, [Stage("ce", config.teacher.epochs, ce_weights())], optim,
                 out_dir / "checkpoints", seed=config.seed, fingerprint=fingerprint, resume=resume,
                 progress=progress, augment=False, description="pretune", distributed=False)
    test_accuracy, _ = evaluate_accuracy(head, test_set)
    metrics = {"valid_accuracy": result.best_valid_accuracy, "test_accuracy": test_accuracy,
               "best_epoch": result.best_epoch, "teacher_passes": frames.stats.teacher_passes,
               "teacher_cache_hits": frames.stats.hits, "utterances": frames.stats.utterances}
    pretuned = PretunedTeacher(config.teacher.spec, head, list(corpus.label_map.labels), metrics, fingerprint,
                               encoder_parameters)
    save_pretuned_teacher(pretuned, out_dir)
    return pretuned


def save_pretuned_teacher(teacher: PretunedTeacher, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / HEAD_FILE) as temp:
        save_file({k: v.contiguous() for k, v in teacher.head.state_dict().items()}, str(temp))
    write_json(out_dir / META_FILE, {"spec": teacher.spec, "head": teacher.head.config_dict(),
                                     "labels": teacher.labels, "metrics": teacher.metrics,
                                     "fingerprint": teacher.fingerprint,
                                     "encoder_parameters": teacher.encoder_parameters})


def load_pretuned_teacher(directory: str | Path) -> PretunedTeacher:
    """Load a pre-tuned teacher head saved by `quads pretune` (safetensors + JSON; no code is executed)."""
    directory = Path(directory)
    try:
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        state = load_file(str(directory / HEAD_FILE))
        head = TeacherHead(**meta["head"])
        head.load_state_dict(state)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        raise QuadsError(f"{directory}: not a pre-tuned teacher written by `quads pretune` ({error})") from None
    head.eval()
    return PretunedTeacher(meta["spec"], head, meta["labels"], meta["metrics"], meta["fingerprint"],
                           meta.get("encoder_parameters", 0))


def build_stage0_teacher(config: RunConfig, corpus: Corpus, out_dir: str | Path, *, progress: bool = True):
    """The frozen teacher encoder for this config: as given, or (teacher.unfreeze) fine-tuned first.

    With `teacher.unfreeze` the encoder of a torch teacher (Whisper) is trained together with a linear head on
    the teacher's own log-mels with cross-entropy, then frozen again: its outputs are cached like any teacher's
    and the intent head is re-fitted on them by `pretune_teacher`. The tuned weights are saved (safetensors)
    under `out_dir/tuned_encoder` and reused by every run with the same settings and corpus.
    """
    from quads.models import build_teacher

    teacher = build_teacher(config.teacher.spec)
    if not config.teacher.unfreeze:
        return teacher
    encoder = getattr(teacher, "encoder", None)
    if not isinstance(encoder, torch.nn.Module):
        raise ConfigError(f"teacher.unfreeze: the teacher '{config.teacher.spec}' cannot be fine-tuned (it is not a "
                          "torch model; speech_embedding is a fixed ONNX graph); use a whisper teacher or "
                          "set teacher.unfreeze=false")
    directory = Path(out_dir) / ENCODER_DIR
    fingerprint = pretune_fingerprint(config, corpus, teacher_identity(teacher))
    meta_path = directory / META_FILE
    if meta_path.exists() and json.loads(meta_path.read_text(encoding="utf-8")).get("fingerprint") == fingerprint:
        encoder.load_state_dict(load_file(str(directory / ENCODER_FILE)))
        return type(teacher)(encoder)
    from quads.audio import FrontEndConfig
    from quads.models import IntentClassifier
    from quads.training.experiment import student_examples

    sets = student_examples(corpus, FrontEndConfig(n_mels=encoder.n_mels), config.data, progress=progress)
    encoder.requires_grad_(True)
    encoder.frozen = False  # train mode again (dropout) while it is fine-tuned; the new teacher re-freezes it
    torch.manual_seed(config.seed)
    labels = list(corpus.label_map.labels)
    if config.teacher.head == "slots":  # the head the tuned frames will feed: a slot head learns a slot's word
        classifier = IntentClassifier(encoder, len(labels), head="slots", slots=slot_layout(labels),
                                      head_dropout=config.teacher.dropout)
    else:
        classifier = IntentClassifier(encoder, len(labels), head="linear")
    epochs = config.teacher.unfreeze_epochs
    # fine-tuned like a student (its batch size and SpecAugment), at the teacher's encoder and head rates
    optim = OptimConfig(epochs=epochs, batch_size=config.optim.batch_size, lr=config.teacher.encoder_lr,
                        head_lr=config.teacher.lr, weight_decay=config.teacher.weight_decay, warmup_epochs=0.5,
                        spec_augment=config.optim.spec_augment)
    result = fit(classifier, sets["train"], sets["valid"], [Stage("ce", epochs, ce_weights())], optim,
                 directory / "checkpoints", seed=config.seed, fingerprint=fingerprint, resume=True,
                 progress=progress, description="unfreeze", distributed=False)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / ENCODER_FILE) as temp:
        save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(temp))
    write_json(meta_path, {"fingerprint": fingerprint, "spec": config.teacher.spec,
                           "valid_accuracy": result.best_valid_accuracy, "epochs": epochs})
    return type(teacher)(encoder)


def needs_frames(config: RunConfig) -> bool:
    """Whether the teacher cache must keep every frame (frame heads, frame-level distillation) or only the mean."""
    return config.teacher.head in ("attention", "attnpool", "slots") or config.distill.target == "frames"


@torch.no_grad()
def teacher_targets(teacher: PretunedTeacher, train_frames: ExampleSet | ShardedExamples, *, standardize: bool = True,
                    frames: bool = False) -> TeacherTargets:
    """The teacher's pooled embeddings and logits for every training utterance, computed once per run; with
    `frames`, also its encoder frames (the frame-level distillation targets), as float16.

    Embeddings (and frames) are z-scored per dimension (train statistics) when `standardize`, so the L1 term
    has the same scale whatever the teacher, and the distillation weight alpha means the same across teachers.
    With a store on disk (`ShardedExamples`) the embeddings and logits are written beside it and read per
    batch, and the frames are z-scored per batch: nothing of size N x D is held in memory.
    """
    if isinstance(train_frames, ShardedExamples):
        embeddings, logits = streamed_head_outputs(teacher, train_frames, standardize)
    else:
        embeddings, logits = predict_embeddings(teacher.head, train_frames)
        if standardize:
            embeddings = (embeddings - embeddings.mean(0)) / embeddings.std(0).clamp_min(1e-6)
    frame_targets = None
    if frames:
        total = torch.zeros(train_frames.items[0].shape[-1], dtype=torch.float64)
        squares = torch.zeros_like(total)
        for item in train_frames.items:
            total += item.double().sum(0)
            squares += item.double().pow(2).sum(0)
        count = float(train_frames.lengths.sum())
        mean = total / count
        std = (squares / count - mean.pow(2)).clamp_min(1e-12).sqrt().clamp_min(1e-6)
        if not standardize:
            mean, std = torch.zeros_like(mean), torch.ones_like(std)
        frame_targets = StandardizedItems(train_frames.items, mean.float(), std.float())
    return TeacherTargets(embeddings=embeddings, logits=logits, frames=frame_targets)


HEAD_BATCH = 64


def streamed_head_outputs(teacher: PretunedTeacher, train_frames: ShardedExamples,
                          standardize: bool) -> tuple[StoreRows, StoreRows]:
    """(pooled embeddings, logits) of the teacher head for every item of `train_frames`, written once into a
    store beside it (keyed by the head's weights) and z-scored on read with float64 streaming statistics."""
    head = teacher.head
    digest = hashlib.sha256()
    for name, value in sorted(head.state_dict().items()):
        digest.update(name.encode() + value.detach().cpu().numpy().tobytes())
    directory = train_frames.directory.with_name(f"{train_frames.directory.name}-head-{digest.hexdigest()[:16]}")

    @torch.no_grad()
    def head_rows(positions):
        was_training = head.training
        head.eval()
        rows = []
        for start in range(0, len(positions), HEAD_BATCH):
            batch = train_frames.collate(list(positions[start : start + HEAD_BATCH]))
            logits, embedding = classifier_outputs(head(batch.inputs, batch.mask))
            rows += [row[None] for row in torch.cat([embedding, logits], 1)]
        head.train(was_training)
        return rows

    store = open_or_build(directory, len(train_frames), head_rows, train_frames.labels, train_frames.ids,
                          time_dim=0)
    dim = store.width - len(teacher.labels)
    mean = std = None
    if standardize:
        total = torch.zeros(dim, dtype=torch.float64)
        squares = torch.zeros_like(total)
        for position in range(len(store)):
            row = torch.from_numpy(store.read(position)[0, :dim].astype(np.float64))
            total += row
            squares += row * row
        count = len(store)
        mean = total / count
        variance = (squares - count * mean * mean) / max(count - 1, 1)
        std = variance.clamp_min(0).sqrt().clamp_min(1e-6).float()
        mean = mean.float()
    return StoreRows(store, 0, dim, mean, std), StoreRows(store, dim, store.width)


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="folder for the pre-tuned teacher")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted pre-tuning")
    parser.add_argument("--wait", action="store_true", help="if another process is writing --out, wait for it "
                        "instead of stopping")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    from quads.folder_lock import exclusive_writer

    with exclusive_writer(args.out, "pretune", wait=args.wait):
        return _run(args, config)


def _run(args: argparse.Namespace, config) -> int:
    progress = not args.quiet
    corpus = load_training_corpus(config.data, progress=progress)
    teacher = build_stage0_teacher(config, corpus, args.out, progress=progress)
    frames = teacher_examples(corpus, teacher, config.data, progress=progress, pooled=not needs_frames(config))
    pretuned = pretune_teacher(config, corpus, frames, args.out, encoder_parameters=teacher.num_parameters(),
                               resume=args.resume, progress=progress, identity=teacher_identity(teacher))
    print(frames.stats)
    print(f"pre-tuned teacher ({config.teacher.spec}, head {config.teacher.head}): "
          f"valid accuracy {pretuned.metrics['valid_accuracy']:.4f}, test accuracy "
          f"{pretuned.metrics['test_accuracy']:.4f} -> {args.out}")
    return 0
