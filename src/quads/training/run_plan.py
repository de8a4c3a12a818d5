"""What a run will need before it starts (`--dry-run`): cache sizes on disk, the memory bound, steps per epoch.

Computed from the corpus manifests and a sample of audio headers only: nothing is decoded, no model is loaded,
so a user can check a FSC or SLURP run against a workstation's disk and memory before committing a GPU.

Memory bound. Examples are read per batch from shards (`quads.training.shards`), so what a training process holds
beyond its model, optimizer state and activations (the same at any corpus size) is
    the index:            INDEX_BYTES per utterance (shard, offset, length, label, id, the epoch's order)
    batches in flight:    (2 + PREFETCH x workers) batches of inputs and teacher targets
    while writing shards: CHUNK_ITEMS utterances' features or teacher outputs
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from quads.audio import audio_duration
from quads.config import RunConfig
from quads.data import open_corpus
from quads.errors import AudioError, DataError
from quads.training.recipes import plan
from quads.training.shards import CHUNK_ITEMS, SHARD_BYTES

INDEX_BYTES = 200  # per utterance in memory; bench_scale measures the actual growth
PREFETCH = 4  # batches each DataLoader worker reads ahead (quads.training.batches.batch_loader)
MEL_FRAMES_PER_SECOND = 100  # 10 ms hop
WHISPER_FRAMES_PER_SECOND = 50  # Whisper's encoder halves the 100 log-mel frames per second
DURATION_SAMPLE = 200  # audio headers read to estimate the mean and longest duration
ASSUMED_SECONDS = 3.0  # when no audio is present: about FSC's and SLURP's mean utterance
TEACHER_BYTES_PER_VALUE = 4 + 4 + 2 + 4  # raw frames, z-scored, float16 target, time-aligned copy
GB = 1e9


def teacher_width(spec: str) -> tuple[int, float] | None:
    """(frame width D, frames per second) of a teacher spec, from its name alone; None when unknown."""
    from quads.models.speech_embedding import EMBED_DIM, WINDOW_STEP_FRAMES
    from quads.models.whisper import WHISPER_SIZES

    kind, _, name = spec.partition(":")
    if kind == "speech_embedding":
        return EMBED_DIM, MEL_FRAMES_PER_SECOND / WINDOW_STEP_FRAMES
    name = Path(name).name.lower()
    sizes = [size for size in WHISPER_SIZES if size in name.replace("whisper-", "")]
    if not kind.startswith("whisper") or not sizes:
        return None
    return WHISPER_SIZES[max(sizes, key=len)]["d_model"], WHISPER_FRAMES_PER_SECOND


@dataclass
class RunPlan:
    """The planned sizes of one `quads compress` run; `lines()` is what `--dry-run` prints."""

    corpus: str
    counts: dict[str, int]
    mean_seconds: float
    max_seconds: float
    duration_note: str
    n_mels: int
    teacher: str
    teacher_dims: tuple[int, float] | None
    teacher_frames: bool
    labels: int
    batch_size: int
    workers: int
    steps: list[tuple[str, int, int, int]]  # (what, epochs, steps per epoch, batch size)
    cache_dir: Path

    @property
    def utterances(self) -> int:
        return sum(self.counts.values())

    @property
    def feature_bytes(self) -> int:
        return int(self.utterances * self.mean_seconds * MEL_FRAMES_PER_SECOND * self.n_mels * 2)

    @property
    def teacher_bytes(self) -> int:
        if self.teacher_dims is None:
            return 0
        width, rate = self.teacher_dims
        per_item = self.mean_seconds * rate if self.teacher_frames else 1
        return int(self.utterances * per_item * width * 4)

    @property
    def head_bytes(self) -> int:
        width = self.teacher_dims[0] if self.teacher_dims else 0
        return self.counts.get("train", 0) * (width + self.labels) * 4

    @property
    def index_bytes(self) -> int:
        return self.utterances * INDEX_BYTES

    @property
    def batch_bytes(self) -> int:
        """One batch of the longest utterances: float32 log-mels (read + transposed) and teacher targets."""
        student = self.batch_size * self.max_seconds * MEL_FRAMES_PER_SECOND * self.n_mels * 4 * 2
        teacher = 0.0
        if self.teacher_dims is not None:
            width, rate = self.teacher_dims
            frames = self.max_seconds * rate if self.teacher_frames else 1
            teacher = self.batch_size * frames * width * TEACHER_BYTES_PER_VALUE
        return int(student + teacher)

    @property
    def write_bytes(self) -> int:
        """A chunk of utterances being written into a shard (the teacher's, the larger)."""
        width, rate = self.teacher_dims or (0, 0.0)
        per_item = max(self.max_seconds * rate * width * 4, self.max_seconds * MEL_FRAMES_PER_SECOND * self.n_mels * 4)
        return int(CHUNK_ITEMS * per_item)

    @property
    def memory_bound(self) -> int:
        in_flight = (2 + PREFETCH * self.workers) * self.batch_bytes
        return self.index_bytes + max(in_flight, self.write_bytes)

    def lines(self) -> list[str]:
        counts = "  ".join(f"{split} {count:,}" for split, count in self.counts.items())
        shards = max(1, -(-self.teacher_bytes // SHARD_BYTES))
        lines = [f"corpus         {self.corpus}: {counts} utterances, {self.mean_seconds:.2f} s on average, "
                 f"longest {self.max_seconds:.1f} s ({self.duration_note})",
                 f"features       {self.n_mels} log-mels x {MEL_FRAMES_PER_SECOND}/s, float16: "
                 f"{self.feature_bytes / GB:.2f} GB in shards + the same in the per-utterance feature cache"]
        if self.teacher_dims is None:
            lines.append(f"teacher        {self.teacher}: frame width unknown from its name (sizes appear once it "
                         "is loaded)")
        else:
            width, rate = self.teacher_dims
            kind = f"{width}-d frames x {rate:g}/s" if self.teacher_frames else f"{width}-d mean per utterance"
            lines.append(f"teacher        {self.teacher}: {kind}, float32: {self.teacher_bytes / GB:.2f} GB in "
                         f"{shards} shard(s) of <= {SHARD_BYTES / 2**30:.0f} GiB; head outputs "
                         f"{self.head_bytes / GB:.2f} GB")
        total = 2 * self.feature_bytes + self.teacher_bytes + self.head_bytes
        root = self.cache_dir if self.cache_dir.exists() else next(
            (p for p in self.cache_dir.parents if p.exists()), Path("/"))
        lines.append(f"disk           {total / GB:.2f} GB under {self.cache_dir} "
                     f"({shutil.disk_usage(root).free / GB:.0f} GB free there)")
        lines.append(f"memory bound   {self.memory_bound / GB:.2f} GB beyond model, optimizer and activations: "
                     f"index {self.index_bytes / GB:.3f} GB ({INDEX_BYTES} B/utterance) + "
                     f"max(batches in flight {(2 + PREFETCH * self.workers) * self.batch_bytes / GB:.2f} GB, "
                     f"shard writing {self.write_bytes / GB:.2f} GB); independent of corpus size beyond the index")
        for what, epochs, per_epoch, batch in self.steps:
            lines.append(f"steps          {what}: {epochs} epochs x {per_epoch:,} steps/epoch of {batch} = "
                         f"{epochs * per_epoch:,}")
        return lines


def sampled_durations(utterances: list) -> tuple[float, float, str]:
    """(mean, longest, how it was found) from up to DURATION_SAMPLE evenly spaced audio headers."""
    step = max(1, len(utterances) // DURATION_SAMPLE)
    seconds = []
    for utterance in utterances[::step][:DURATION_SAMPLE]:
        try:
            seconds.append(audio_duration(utterance.path))
        except AudioError:
            continue
    if not seconds:
        return ASSUMED_SECONDS, 2 * ASSUMED_SECONDS, f"no audio found: {ASSUMED_SECONDS:g} s assumed"
    return sum(seconds) / len(seconds), max(seconds), f"from {len(seconds)} audio headers"


def steps_per_epoch(utterances: int, batch_size: int, world_size: int = 1) -> int:
    """As `global_batches` counts them: full batches plus a last partial one when every rank gets an example."""
    full, rest = divmod(utterances, batch_size)
    return full + (1 if rest >= max(world_size, 2) else 0)


def plan_run(config: RunConfig, cells: list[tuple[str, int]], workers: int = 0) -> RunPlan:
    """Plan the training of `cells` ((recipe, bits) pairs) from the manifests (the audio need not be present)."""
    from quads.training.experiment import cache_root, default_corpus_dir
    from quads.training.pretune import needs_frames

    path = Path(config.data.path).expanduser() if config.data.path else default_corpus_dir(config.data)
    options: dict = {"check_audio": False}
    if path.is_dir() and not (path / "data" / "train_data.csv").exists():
        options["recordings"] = config.data.slurp_recordings
    try:
        corpus = open_corpus(path, **options)
    except (DataError, OSError) as error:
        raise DataError(f"--dry-run needs the corpus manifests (FSC data/*.csv, SLURP *.jsonl or a manifest .csv) "
                        f"at {path}, but cannot read them: {error}") from None
    counts = {split: len(corpus.splits.get(split, [])) for split in ("train", "valid", "test")}
    mean_seconds, max_seconds, note = sampled_durations([u for s in counts for u in corpus.splits.get(s, [])])
    per_epoch = steps_per_epoch(counts["train"], config.optim.batch_size)
    batch = config.optim.batch_size
    steps = [("pretune", config.teacher.epochs, -(-counts["train"] // config.teacher.batch_size),
              config.teacher.batch_size)]
    for recipe, bits in cells:
        recipe_plan = plan(recipe, config, bits)
        if recipe_plan.start_from:
            start = plan(recipe_plan.start_from, config, 32)
            steps.append((f"{recipe_plan.start_from} (fp32 start)", sum(s.epochs for s in start.stages), per_epoch,
                          batch))
        if recipe_plan.stages:
            steps.append((f"{recipe} {bits}b", sum(s.epochs for s in recipe_plan.stages), per_epoch, batch))
    steps = list(dict.fromkeys(steps))  # a shared fp32 start is trained once
    return RunPlan(corpus=f"{corpus.name} ({path})", counts=counts, mean_seconds=mean_seconds,
                   max_seconds=max_seconds, duration_note=note, n_mels=config.data.n_mels,
                   teacher=config.teacher.spec, teacher_dims=teacher_width(config.teacher.spec),
                   teacher_frames=needs_frames(config), labels=len(corpus.label_map),
                   batch_size=config.optim.batch_size, workers=workers, steps=steps,
                   cache_dir=cache_root(config.data))


def print_dry_run(config: RunConfig, cells: list[tuple[str, int]], command: str) -> None:
    """What `--dry-run` prints for `command` training `cells`."""
    run_plan = plan_run(config, cells, config.data.loader_workers)
    print(f"dry run of `{command}`: nothing is decoded or trained")
    print("\n".join(run_plan.lines()))
