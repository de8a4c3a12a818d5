"""`quads compress`: run one recipe (QUADS or a baseline) at one bit width and write a run folder.

A run folder holds everything needed to export, evaluate or resume:

    RUN/config.yaml     the resolved settings            RUN/last.pt       the resumable checkpoint
    RUN/student.pt      the final student (weights, codebooks, architecture, labels; loads with weights_only)
    RUN/summary.json    valid/test accuracy, size, teacher passes, wall time
    RUN/metrics.csv     one row per epoch                RUN/tensorboard/  the same, for TensorBoard
    RUN/teacher/        the pre-tuned teacher (unless --teacher points to one)
    RUN/distill/, RUN/fp32/   the fp32 student a quantizing recipe starts from (unless --init gives one)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from quads.audio import FrontEndConfig
from quads.compression.quantize import CodebookQuantizer, post_training_quantize
from quads.compression.spec import QuantizationSpec, select_quantized_tensors
from quads.config import OptimConfig, RunConfig, add_config_arguments, load_config, save_config
from quads.data import Corpus
from quads.errors import ConfigError, QuadsError
from quads.folder_lock import exclusive_writer
from quads.training.batches import ExampleSet
from quads.training.checkpoints import STUDENT_FILE, load_checkpoint, load_student, save_checkpoint
from quads.training.distributed import Distributed
from quads.training.experiment import (
    TeacherFrames,
    corpus_fingerprint,
    load_training_corpus,
    student_examples,
    teacher_examples,
    write_json,
)
from quads.training.inference import evaluate_accuracy
from quads.training.loop import fit
from quads.training.precision import resolve_precision
from quads.training.pretune import (
    PretunedTeacher,
    build_stage0_teacher,
    needs_frames,
    pretune_teacher,
    teacher_identity,
    teacher_targets,
)
from quads.training.recipes import LOW_BITS, RECIPES, plan
from quads.training.shards import ShardedExamples

logger = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
CODEBOOK_DTYPE = torch.float16  # what the packed file stores; training ends on centroids rounded to it


@dataclass
class Prepared:
    """What several runs on the same corpus share: loaded once by `quads demo` and `quads ablate`."""

    corpus: Corpus
    student: dict[str, ExampleSet | ShardedExamples]
    teacher: PretunedTeacher | None = None
    teacher_frames: TeacherFrames | None = None
    teacher_encoder: Any = None  # the frozen teacher the frames came from (fine-tuned with teacher.unfreeze)


@dataclass
class CompressResult:
    run_dir: Path
    recipe: str
    bits: int
    valid_accuracy: float
    test_accuracy: float
    summary: dict[str, Any]


def quantization_spec(config: RunConfig, bits: int) -> QuantizationSpec:
    return QuantizationSpec(bits=bits, per_layer=dict(config.quant.per_layer), min_bits=dict(config.quant.min_bits),
                            exclude=list(config.quant.exclude), iterations=config.quant.kmeans_iterations,
                            weights_per_centroid=config.quant.weights_per_centroid)


def make_student(config: RunConfig, labels: list[str], calibration: Any = None) -> torch.nn.Module:
    """The student classifier of the config for these intent labels, freshly initialised from the config's seed;
    `calibration` batches (`calibration_batches`) choose what a narrowed Whisper student keeps."""
    from quads.models import build_student
    from quads.models.slots import slot_layout

    torch.manual_seed(config.seed)
    slots = slot_layout(labels) if config.student.head == "slots" else None
    return build_student(config.student.encoder, num_labels=len(labels), n_mels=config.data.n_mels,
                         head=config.student.head, pooling=config.student.pooling, slots=slots,
                         calibration=calibration, **config.student.overrides)


CALIBRATION_CLIPS = 64  # training clips, evenly spread over the split, that a narrowed student is cut on


def calibration_batches(examples: Any, clips: int = CALIBRATION_CLIPS, batch_size: int = 16) -> list[tuple]:
    """(features, mask) batches of `clips` training clips evenly spread over the split (the same on every run
    and process)."""
    positions = torch.linspace(0, len(examples) - 1, min(clips, len(examples))).round().long().unique()
    return [(batch.inputs, batch.mask) for batch in
            (examples.collate(positions[start:start + batch_size]) for start in range(0, len(positions), batch_size))]


def prepare(config: RunConfig, *, with_teacher: bool, teacher_dir: Path | None = None, progress: bool = True,
            prepared: Prepared | None = None) -> Prepared:
    """Load the corpus and student features; with_teacher: teacher frames (cached) and the pre-tuned teacher."""
    if prepared is None:
        corpus = load_training_corpus(config.data, progress=progress)
        frontend = FrontEndConfig(n_mels=config.data.n_mels)
        prepared = Prepared(corpus, student_examples(corpus, frontend, config.data, progress=progress))
    if with_teacher and prepared.teacher is None:
        if teacher_dir is None:
            raise ConfigError("a teacher folder is needed to distil")
        teacher = build_stage0_teacher(config, prepared.corpus, teacher_dir, progress=progress)
        prepared.teacher_encoder = teacher
        prepared.teacher_frames = teacher_examples(prepared.corpus, teacher, config.data, progress=progress,
                                                   pooled=not needs_frames(config))
        prepared.teacher = pretune_teacher(config, prepared.corpus, prepared.teacher_frames, teacher_dir,
                                           encoder_parameters=teacher.num_parameters(), progress=progress,
                                           identity=teacher_identity(teacher))
        if prepared.teacher.labels != list(prepared.corpus.label_map.labels):
            raise QuadsError(f"the pre-tuned teacher in {teacher_dir} was trained on other labels")
    return prepared


FLOAT_RECIPES = ("fp32", "distill")  # recipes that never put weights on a codebook


def with_bits(config: RunConfig, bits: int) -> RunConfig:
    """The config with quant.bits set to `bits` (the one place a bit width lives)."""
    from quads.compression.codebook import validate_bits

    validate_bits(bits)
    return replace(config, quant=replace(config.quant, bits=bits))


def effective_config(config: RunConfig, recipe: str) -> RunConfig:
    """The config a recipe really runs with: fp32 and distill train float students, so quant.bits <= 8 becomes
    32 (with a log line) rather than labelling a float model as low-bit in student.pt, the packed file and
    the evaluation."""
    if recipe in FLOAT_RECIPES and config.quant.bits <= 8:
        logger.warning("%s trains a float student: quant.bits=%d does not apply, it runs and is recorded at 32 bits",
                       recipe, config.quant.bits)
        return with_bits(config, 32)
    return config


def quantized_widths(config: RunConfig, labels: list[str]) -> dict[str, int]:
    """The width each student tensor gets under `config.quant` (bits, per_layer, min_bits and exclude
    resolved), read from the student's shapes alone: a meta-device model (the pretrained weights it would copy
    are cached by `quads.models.whisper`), built without touching the global random state."""
    with torch.device("meta"), torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # meta parameters ignore the weights they are given; small tensors say so
        return select_quantized_tensors(make_student(config, labels), quantization_spec(config, config.quant.bits))


def run_fingerprint(config: RunConfig, recipe: str, prepared: Prepared) -> str:
    """Identity of a run's result: its settings, recipe, corpus and (when one is loaded) the pre-tuned teacher,
    whose fingerprint covers the teacher's settings and weights. Float recipes ignore the quant section (all of
    QUADS' lambda or schedule variants share one distilled student); quantizing ones count the width each
    tensor resolves to rather than the per_layer/min_bits/exclude patterns, so a floor that changes nothing at
    4 bits (a 2-bit floor of 4) does not retrain 4-bit runs; post-training k-means ignores the settings of the
    stages it never trains (gamma, epochs, rates). Checkpoints, student.pt and grid rows carry it,
    and are reused only when it matches."""
    config = effective_config(config, recipe)
    quantizes = recipe not in FLOAT_RECIPES and config.quant.bits <= 16
    # The stages actually trained: a default schedule can change with the code while the config stays the same.
    stages = plan(recipe, config).stages if quantizes else ()
    # The quant keys that count besides `bits`. Patterns and low_bit_epochs count as what they resolve to (below):
    # each tensor's width and the epochs of the stages trained. Post-training k-means trains no stage.
    if not quantizes:
        counted: set[str] = set()
    elif not stages:
        counted = {"kmeans_iterations", "weights_per_centroid"}
    else:
        counted = set(asdict(config.quant)) - {"per_layer", "min_bits", "exclude", "low_bit_epochs"}
    if config.quant.weights_per_centroid == 0:
        counted.discard("weights_per_centroid")  # one codebook per tensor, as before the setting: old runs stay valid
    ignore = tuple(f"quant.{key}" for key in asdict(config.quant) if key != "bits" and key not in counted)
    ignore += ("data.loader_workers",)  # how batches are read, never what they hold
    precision = resolve_precision(config.optim.precision)  # counted as what it means on this machine
    if precision == "fp32":
        ignore += ("optim.precision",)  # float32 steps, as before the setting: earlier runs stay valid
    else:
        config = replace(config, optim=replace(config.optim, precision=precision))
    teacher = prepared.teacher.fingerprint if prepared.teacher is not None else "-"
    schedule = "/" + "".join(f"{stage.name[0]}{stage.epochs}" for stage in stages) if stages else ""
    widths = ""
    if quantizes:
        resolved = quantized_widths(config, list(prepared.corpus.label_map.labels))
        widths = "/" + hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:12]
    return (f"{config.fingerprint(ignore=ignore)}/{recipe}/{config.quant.bits}/"
            f"{corpus_fingerprint(prepared.corpus)}/{teacher}{schedule}{widths}")


def stale_reason(run_dir: Path, fingerprint: str, settings: dict | None = None) -> str | None:
    """Why the student or checkpoint in `run_dir` cannot be reused under `fingerprint`, or None when it can
    (or when there is none)."""
    from quads.config import changed_settings

    for name in (STUDENT_FILE, "last.pt"):
        path = run_dir / name
        if not path.exists():
            continue
        saved = load_checkpoint(path)
        if saved.get("fingerprint") != fingerprint:
            changes = changed_settings(saved.get("settings"), settings)
            return (f"{path} was made with other settings ({'; '.join(changes)})" if changes else
                    f"{path} was made with other settings, corpus or teacher weights")
        return None
    return None


def compress(config: RunConfig, recipe: str, out_dir: str | Path, *, teacher_dir: str | Path | None = None,
             init_dir: str | Path | None = None, resume: bool = False, progress: bool = True,
             prepared: Prepared | None = None, wait: bool = False) -> CompressResult:
    """Train (or post-train quantize) a student with `recipe` at `config.quant.bits` and write the run folder
    `out_dir` (set the width with `with_bits`; fp32 and distill always run at 32 bits, see `effective_config`).

    The run holds `out_dir`'s lock (`quads.folder_lock`): a second writer is refused (or waits, with `wait`)."""
    config = effective_config(config, recipe)
    if not Distributed().is_main:  # the main process holds the lock for all ranks
        return _compress(config, recipe, out_dir, teacher_dir=teacher_dir, init_dir=init_dir, resume=resume,
                         progress=progress, prepared=prepared)
    with exclusive_writer(out_dir, "compress", wait=wait):
        return _compress(config, recipe, out_dir, teacher_dir=teacher_dir, init_dir=init_dir, resume=resume,
                         progress=progress, prepared=prepared)


def _compress(config: RunConfig, recipe: str, out_dir: str | Path, *, teacher_dir: str | Path | None,
              init_dir: str | Path | None, resume: bool, progress: bool, prepared: Prepared | None) -> CompressResult:
    started = time.perf_counter()
    out_dir = Path(out_dir)
    world = Distributed()
    bits = config.quant.bits
    recipe_plan = plan(recipe, config, bits)
    teacher_dir = Path(teacher_dir) if teacher_dir else out_dir / "teacher"
    # a distilled starting student is checked against the teacher it was distilled from (`run_fingerprint`)
    needs_teacher = recipe_plan.uses_teacher or recipe_plan.start_from == "distill"
    # One process prepares the caches (features, teacher outputs, pre-tuned head); the others then hit them.
    if not world.is_main:
        world.barrier()
    prepared = prepare(config, with_teacher=needs_teacher, teacher_dir=teacher_dir, progress=progress,
                       prepared=prepared)
    if world.is_main:
        world.barrier()
    labels = list(prepared.corpus.label_map.labels)
    spec = quantization_spec(config, bits)

    fresh = recipe_plan.start_from is None
    classifier = make_student(config, labels, calibration_batches(prepared.student["train"]) if fresh else None)
    projection_state = None
    if recipe_plan.start_from is not None:
        init = Path(init_dir) if init_dir else out_dir / recipe_plan.start_from
        init_config = with_bits(config, 32)
        init_fingerprint = run_fingerprint(init_config, recipe_plan.start_from, prepared)
        stale = stale_reason(init, init_fingerprint, init_config.to_dict())
        if stale:
            logger.warning("not reusing the initial student: %s; training it again", stale)
        if stale or not (init / STUDENT_FILE).exists():
            compress(init_config, recipe_plan.start_from, init, teacher_dir=teacher_dir, resume=resume and not stale,
                     progress=progress, prepared=prepared)
        initial = load_student(init)
        if initial["recipe"] != recipe_plan.start_from or initial["bits"] != 32:
            raise ConfigError(f"{init}: {recipe} starts from a '{recipe_plan.start_from}' fp32 student, but that "
                              f"folder holds a '{initial['recipe']}' {initial['bits']}-bit one")
        if initial["labels"] != labels or initial["architecture"] != classifier.config_dict():
            raise ConfigError(f"{init}: the initial student has another architecture or label set than this config")
        classifier.load_state_dict(initial["model"])
        projection_state = initial.get("projection")
    else:
        if config.teacher.unfreeze and prepared.teacher_encoder is not None:
            copy_tuned_encoder(classifier, prepared.teacher_encoder)
        if config.student.init_head and prepared.teacher is not None:
            copy_teacher_head(classifier, prepared.teacher.head)

    targets = None
    if recipe_plan.uses_teacher:
        targets = teacher_targets(prepared.teacher, prepared.teacher_frames.sets["train"],
                                  standardize=config.distill.standardize_teacher,
                                  frames=config.distill.target == "frames")

    quantizer: CodebookQuantizer | None = None
    history: list[dict] = []
    best_epoch = 0
    fingerprint = run_fingerprint(config, recipe, prepared)
    if recipe_plan.stages:
        result = fit(classifier, prepared.student["train"], prepared.student["valid"], list(recipe_plan.stages),
                     training_optim(config, recipe_plan), out_dir, seed=config.seed, teacher=targets,
                     quantizer_factory=lambda model: CodebookQuantizer(model, spec, fit=False),
                     fingerprint=fingerprint, resume=resume, progress=progress, description=f"{recipe} {bits}b",
                     projection_state=projection_state, settings=config.to_dict(),
                     loader_workers=config.data.loader_workers)
        history, best_epoch = result.history, result.best_epoch
        projection_state = result.projection_state
        if result.quantizer_state is not None:
            quantizer = CodebookQuantizer(classifier, spec, fit=False)
            quantizer.load_state_dict(result.quantizer_state)
    if recipe_plan.post_training_only or (bits == 16):
        quantizer = post_training_quantize(classifier, spec)
    if quantizer is not None:
        quantizer.round_centroids_to(CODEBOOK_DTYPE)
        quantizer.hard_snap()

    valid_accuracy, _ = evaluate_accuracy(classifier, prepared.student["valid"])
    test_accuracy, _ = evaluate_accuracy(classifier, prepared.student["test"])
    summary = {
        "recipe": recipe,
        "bits": bits,
        "seed": config.seed,
        "valid_accuracy": valid_accuracy,
        "test_accuracy": test_accuracy,
        "best_epoch": best_epoch,
        "epochs": sum(stage.epochs for stage in recipe_plan.stages),
        "stages": [[stage.name, stage.epochs] for stage in recipe_plan.stages],
        "params": sum(p.numel() for p in classifier.parameters()),
        "training_precision": resolve_precision(config.optim.precision) if recipe_plan.stages else None,
        "quantization": quantizer.summary() if quantizer is not None else None,
        "teacher": None if prepared.teacher is None else {
            "spec": prepared.teacher.spec, "params": prepared.teacher.num_parameters, **prepared.teacher.metrics},
        "teacher_cache": None if prepared.teacher_frames is None else {
            "utterances": prepared.teacher_frames.stats.utterances, "hits": prepared.teacher_frames.stats.hits,
            "teacher_passes": prepared.teacher_frames.stats.teacher_passes},
        "wall_seconds": time.perf_counter() - started,
        "history": history,
    }
    if world.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, out_dir / "config.yaml")
        save_checkpoint(out_dir / STUDENT_FILE, {
            "format": "quads-student", "model": classifier.state_dict(),
            "quantizer": quantizer.state_dict() if quantizer is not None else None,
            "architecture": classifier.config_dict(), "labels": labels, "bits": bits, "recipe": recipe,
            "projection": projection_state, "fingerprint": fingerprint, "settings": config.to_dict(),
            "frontend": asdict(FrontEndConfig(n_mels=config.data.n_mels)),
            "metrics": {"valid_accuracy": valid_accuracy, "test_accuracy": test_accuracy}})
        write_json(out_dir / SUMMARY_FILE, summary)
    world.barrier()
    return CompressResult(out_dir, recipe, bits, valid_accuracy, test_accuracy, summary)


def training_optim(config: RunConfig, recipe_plan) -> OptimConfig:
    """The optimiser settings of a recipe: the peak rate, for encoder and head alike, is quant.low_bit_lr for a
    recipe that trains on codebooks of LOW_BITS or fewer and quant.lr for one on wider codebooks (each when
    set); float recipes keep optim's rates."""
    quantizes = any(stage.quantize for stage in recipe_plan.stages)
    rate = config.quant.low_bit_lr if recipe_plan.bits <= LOW_BITS else config.quant.lr
    if quantizes and rate > 0:
        return replace(config.optim, lr=rate, head_lr=rate)
    return config.optim


def copy_tuned_encoder(classifier: torch.nn.Module, teacher: Any) -> int:
    """Start a Whisper student cut from the teacher from the teacher's fine-tuned weights (`teacher.unfreeze`)
    rather than the released ones: every student tensor whose name the teacher's encoder has, the position
    table cut to the student's rows. Returns how many tensors were copied (0 when the student is not a Whisper
    encoder of the teacher's width)."""
    from quads.models.whisper import WhisperTeacherEncoder, cut_encoder_state

    student, tuned = getattr(classifier, "encoder", None), getattr(teacher, "encoder", None)
    if not isinstance(student, WhisperTeacherEncoder) or not isinstance(tuned, WhisperTeacherEncoder):
        return 0
    ours = student.encoder.state_dict()
    layers, positions = student.whisper_config.encoder_layers, ours["embed_positions.weight"].shape[0]
    ffn_dim = student.whisper_config.encoder_ffn_dim
    # a narrower student's units are cut from the tuned layers; a wider one cannot be
    copied = (cut_encoder_state(tuned.encoder.state_dict(), layers, positions, ffn_dim)
              if ffn_dim <= tuned.whisper_config.encoder_ffn_dim else {})
    if copied.keys() != ours.keys() or any(copied[name].shape != ours[name].shape for name in ours):
        return 0  # another architecture than a cut of this teacher: keep the student's own weights
    student.encoder.load_state_dict(copied)
    logger.info("student encoder starts from the fine-tuned teacher's first %d layers",
                student.whisper_config.encoder_layers)
    return len(copied)


def copy_teacher_head(classifier: torch.nn.Module, teacher_head: torch.nn.Module) -> bool:
    """Copy the pre-tuned teacher head's attention pooling and classifier into the student where every shape
    matches (attnpool teacher, attention-pooled student with a "norm" head of the same width; or slot heads of
    the same layout and width); True if copied."""
    student_head, teacher_slots = getattr(classifier, "head", None), getattr(teacher_head, "slots", None)
    if teacher_slots is not None:
        if getattr(student_head, "layout", None) != teacher_slots.layout:
            return False
        pairs = [(student_head, teacher_slots)]
    else:
        pairs = [(getattr(classifier, "pooling", None), getattr(teacher_head, "pool", None)),
                 (student_head, getattr(teacher_head, "classifier", None))]
    for student_part, teacher_part in pairs:
        if student_part is None or teacher_part is None:
            return False
        ours, theirs = student_part.state_dict(), teacher_part.state_dict()
        if ours.keys() != theirs.keys() or any(ours[k].shape != theirs[k].shape for k in ours):
            return False
    for student_part, teacher_part in pairs:
        student_part.load_state_dict(teacher_part.state_dict())
    logger.info("student pooling and head start from the pre-tuned teacher's")
    return True


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--recipe", choices=RECIPES, default="quads", help="compression recipe (default: quads)")
    parser.add_argument("--bits", type=int, help="bit width: 1, 2, 3, 4, 8, 16 or 32 (default: quant.bits)")
    parser.add_argument("--out", type=Path, required=True, help="run folder to write")
    parser.add_argument("--teacher", type=Path, help="a pre-tuned teacher folder (from `quads pretune`) to reuse")
    parser.add_argument("--init", type=Path, help="the fp32 run folder to start from (distill for ptq, sequential "
                        "and quads; fp32 for qat); trained into RUN/distill or RUN/fp32 when not given")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    parser.add_argument("--wait", action="store_true", help="if another process is writing --out, wait for it "
                        "instead of stopping")
    parser.add_argument("--dry-run", action="store_true", help="print the planned cache sizes, memory bound and "
                        "steps per epoch from the manifests, then stop (nothing is decoded or trained)")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    if args.bits is not None:
        config = with_bits(config, args.bits)
    if args.dry_run:
        from quads.training.run_plan import print_dry_run

        print_dry_run(config, [(args.recipe, config.quant.bits)],
                      f"quads compress --recipe {args.recipe} --bits {config.quant.bits}")
        return 0
    result = compress(config, args.recipe, args.out, teacher_dir=args.teacher, init_dir=args.init,
                      resume=args.resume, progress=not args.quiet, wait=args.wait)
    if Distributed().is_main:
        summary = result.summary
        print(f"{args.recipe} at {result.bits} bits: valid accuracy {result.valid_accuracy:.4f}, test accuracy "
              f"{result.test_accuracy:.4f}, {summary['params']:,} parameters, {summary['wall_seconds']:.0f} s")
        if summary["teacher_cache"]:
            cache = summary["teacher_cache"]
            print(f"teacher passes this run: {cache['teacher_passes']} for {cache['utterances']} utterances "
                  f"({cache['hits']} cache hits)")
        print(f"run folder: {result.run_dir} (next: quads export {result.run_dir} --out model.quads)")
    return 0
