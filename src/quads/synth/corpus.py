"""Writing a synthetic corpus in the Fluent Speech Commands layout, resumably.

    DIR/data/{train,valid,test}_data.csv     header `,path,speakerId,transcription,action,object,location`
                                             (+ `intent` for tables in the transcription/intent schema)
    DIR/wavs/speakers/<speaker>/<utt>.wav    16 kHz mono 16-bit PCM
    DIR/synth.json                           the settings, speakers, voices and counts
    DIR/phrases.tsv                          the phrase table that was spoken

Each WAV is written to a temporary name in its own folder and renamed into place, and the CSVs are written
last, so an interrupted run leaves only whole files; rerunning the same command makes only the missing ones.
The settings in synth.json guard the folder: a rerun with other settings is refused unless forced.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile
from tqdm import tqdm

from quads import __version__
from quads.atomic import atomic_path, atomic_write_text
from quads.audio import SAMPLE_RATE
from quads.data.corpus import SPLITS
from quads.data.fsc import FSC_COLUMNS, SLOT_COLUMNS
from quads.errors import ConfigError, DataError
from quads.folder_lock import LOCK_NAME, exclusive_writer
from quads.synth.augment import AugmentConfig, augment, utterance_rng
from quads.synth.grammar import (
    FSC_SCHEMA,
    INTENT_SCHEMA,
    Phrase,
    PhraseTable,
    builtin_phrase_table,
    load_phrase_table,
)
from quads.synth.slurp_text import read_slurp_splits
from quads.synth.tts import engine_versions, find_engines, speak
from quads.synth.voices import Speaker, make_kokoro_speakers, make_piper_speakers, make_speakers, split_speakers

DEFAULT_SPEAKERS = 48                 # espeak-ng and flite: 34 train / 7 valid / 7 test
DEFAULT_PIPER_SPEAKERS = 6            # settings of the neural piper voice, added: 5 train / 1 valid
DEFAULT_UTTERANCES_PER_INTENT = 2     # per speaker: 48 x 31 x 2 = 2,976 utterances for the built-in table
WAV_FOLDER = Path("wavs") / "speakers"
TEMP_SUFFIX = ".tmp"
MIN_WAV_BYTES = 45                    # a WAV header alone is 44 bytes


@dataclass(frozen=True)
class PlannedUtterance:
    """One file to make: who says which phrase, in which split, under which name."""

    split: str
    speaker: Speaker
    phrase: Phrase
    name: str            # file stem, unique in the corpus

    @property
    def relative_path(self) -> str:
        return f"{WAV_FOLDER.as_posix()}/{self.speaker.speaker_id}/{self.name}.wav"


@dataclass
class SynthReport:
    """What a synthesis run produced; `summary()` is what the CLI prints."""

    out_dir: Path
    utterances: dict[str, int]
    speakers: dict[str, int]
    audio_seconds: float
    synthesized: int
    reused: int
    wall_seconds: float
    csv_paths: dict[str, Path] = field(default_factory=dict)

    @property
    def total_utterances(self) -> int:
        return sum(self.utterances.values())

    def summary(self) -> str:
        per_split = ", ".join(f"{split} {self.utterances[split]} utt / {self.speakers[split]} spk" for split in SPLITS)
        return (f"{self.out_dir}: {self.total_utterances} utterances ({per_split}), "
                f"{self.audio_seconds / 60:.1f} min of audio; made {self.synthesized}, reused {self.reused}, "
                f"in {self.wall_seconds:.1f} s")


def synthesize_corpus(out_dir: str | Path, phrase_table: PhraseTable | str | Path | None = None, *,
                      speakers: int | None = None, piper_speakers: int = DEFAULT_PIPER_SPEAKERS,
                      kokoro_speakers: int = 0, seed: int = 0,
                      jobs: int | None = None, augment: bool | AugmentConfig = True,
                      utterances_per_intent: int = DEFAULT_UTTERANCES_PER_INTENT,
                      train_utterances_per_intent: int | None = None, held_out_phrasings: bool = True,
                      force: bool = False, progress: bool = True, wait: bool = False) -> SynthReport:
    """Speak a phrase table (default: the built-in commands) with synthetic speakers into an FSC-layout corpus.

    Every speaker says every intent `utterances_per_intent` times (train speakers
    `train_utterances_per_intent` times where given), in different phrasings where the table has them; speakers
    are split 70/15/15 into speaker-disjoint train/valid/test. With `held_out_phrasings`, intents with at least 4
    phrasings keep 2 for test and 1 for valid only (see `split_phrasings`), so test measures wordings as well as
    voices that training never heard. `piper_speakers` settings of the neural piper voice and `kokoro_speakers`
    of the Kokoro voices are added to train and valid (0: none).
    """
    if phrase_table is None:
        table = builtin_phrase_table()
    elif isinstance(phrase_table, PhraseTable):
        table = phrase_table
    else:
        table = load_phrase_table(phrase_table)
    counts = per_split_counts(utterances_per_intent, train_utterances_per_intent)
    speaker_count = DEFAULT_SPEAKERS if speakers is None else speakers
    by_split = split_speakers(corpus_speakers(speaker_count, piper_speakers, seed, kokoro_speakers), seed)
    plan = plan_phrase_corpus(table, by_split, seed, counts, held_out_phrasings)
    settings = {"source": "phrase table", "table": table.fingerprint(), "seed": seed, "speakers": speaker_count,
                "utterances_per_intent": utterances_per_intent, "held_out_phrasings": held_out_phrasings,
                **({"train_utterances_per_intent": counts["train"]} if counts["train"] != utterances_per_intent
                   else {}),
                **({"piper_speakers": piper_speakers} if piper_speakers else {}),
                **({"kokoro_speakers": kokoro_speakers} if kokoro_speakers else {})}
    return _write_corpus(Path(out_dir), table, plan, by_split, settings, seed=seed, jobs=jobs,
                         augment_config=_augment_config(augment), force=force, progress=progress, wait=wait)


def corpus_speakers(count: int, piper_count: int, seed: int, kokoro_count: int = 0) -> list[Speaker]:
    """`count` espeak-ng / flite speakers, `piper_count` piper and `kokoro_count` Kokoro ones (each from its own
    seeded draw)."""
    for name, value in (("piper_speakers", piper_count), ("kokoro_speakers", kokoro_count)):
        if value < 0:
            raise ConfigError(f"{name}: must be 0 or more, got {value}")
    return (make_speakers(count, seed) + make_piper_speakers(piper_count, seed)
            + make_kokoro_speakers(kokoro_count, seed))


def synthesize_slurp_corpus(out_dir: str | Path, slurp_dir: str | Path, *, speakers: int | None = None,
                            seed: int = 0, jobs: int | None = None, augment: bool | AugmentConfig = True,
                            limit: int | None = None, force: bool = False, progress: bool = True,
                            wait: bool = False) -> SynthReport:
    """Speak SLURP's `sentence`s (one utterance per record) into an FSC-layout corpus with an `intent` column.

    SLURP's splits are kept where their file exists (devel -> valid), missing ones are carved out (see
    `quads.synth.slurp_text`); each split's records are dealt out round-robin to that split's own speakers.
    """
    records = read_slurp_splits(slurp_dir, seed, limit)
    speaker_count = DEFAULT_SPEAKERS if speakers is None else speakers
    by_split = split_speakers(make_speakers(speaker_count, seed), seed)
    columns = ("transcription", "intent", "scenario", "action", "slurp_id", "split")
    phrases_by_split = {
        split: [Phrase(r.sentence, r.intent, {"scenario": r.scenario, "action": r.action, "slurp_id": r.slurp_id,
                                              "split": split}) for r in split_records]
        for split, split_records in records.items()}
    table = PhraseTable(tuple(p for split in SPLITS for p in phrases_by_split[split]), INTENT_SCHEMA, columns,
                        source=str(slurp_dir))
    plan = plan_record_corpus(phrases_by_split, by_split, seed)
    settings = {"source": "slurp", "table": table.fingerprint(), "seed": seed, "speakers": speaker_count,
                "limit": limit}
    return _write_corpus(Path(out_dir), table, plan, by_split, settings, seed=seed, jobs=jobs,
                         augment_config=_augment_config(augment), force=force, progress=progress, wait=wait)


TEST_ONLY_PHRASINGS = 2
VALID_ONLY_PHRASINGS = 1


def split_phrasings(phrases: list[Phrase], held_out: bool) -> dict[str, list[Phrase]]:
    """The phrasings each split may say. A table with a `split` column pins phrasings (valid says its own and
    the train ones; a split without pinned ones says the train ones). Otherwise, held out (an intent with >= 4
    phrasings): the first 2 for test only, the next for valid (with the train ones), the rest for train; else
    every split says all of them."""
    pinned = {split: [p for p in phrases if p.slots.get("split") == split] for split in ("valid", "test")}
    if pinned["valid"] or pinned["test"]:
        train = [p for p in phrases if p.slots.get("split") not in ("valid", "test")] or phrases
        return {"train": train, "valid": pinned["valid"] + train, "test": pinned["test"] or train}
    if not held_out or len(phrases) < TEST_ONLY_PHRASINGS + VALID_ONLY_PHRASINGS + 1:
        return {split: phrases for split in SPLITS}
    test, rest = phrases[:TEST_ONLY_PHRASINGS], phrases[TEST_ONLY_PHRASINGS:]
    return {"train": rest[VALID_ONLY_PHRASINGS:], "valid": rest, "test": test}


def per_split_counts(utterances_per_intent: int, train_utterances_per_intent: int | None = None) -> dict[str, int]:
    """How many times each split's speakers say each intent; a clear error below 1."""
    for name, count in (("utterances_per_intent", utterances_per_intent),
                        ("train_utterances_per_intent", train_utterances_per_intent)):
        if count is not None and (not isinstance(count, int) or count < 1):
            raise ConfigError(f"{name}: must be at least 1, got {count}")
    counts = dict.fromkeys(SPLITS, utterances_per_intent)
    if train_utterances_per_intent is not None:
        counts["train"] = train_utterances_per_intent
    return counts


def plan_phrase_corpus(table: PhraseTable, speakers: dict[str, list[Speaker]], seed: int,
                       utterances_per_intent: int | dict[str, int],
                       held_out_phrasings: bool = False) -> list[PlannedUtterance]:
    """Each speaker says each intent k times (k per split when a dict); phrasings rotate across a split's
    speakers so all get spoken."""
    counts = utterances_per_intent if isinstance(utterances_per_intent, dict) else per_split_counts(
        utterances_per_intent)
    rng = random.Random(f"quads-phrasings-{seed}")
    shuffled = {intent: rng.sample(phrases, len(phrases)) for intent, phrases in table.by_intent().items()}
    per_split = {intent: split_phrasings(phrases, held_out_phrasings) for intent, phrases in shuffled.items()}
    plan = []
    for split in SPLITS:
        orders = {intent: phrasings[split] for intent, phrasings in per_split.items()}
        offset = rng.randrange(1 << 16)
        if split != "train" and any(set(p[split]) - set(p["train"]) for p in per_split.values()):
            offset = 0  # its own wordings come first: start there, so they are spoken however long the list
        count = counts[split]
        for position, speaker in enumerate(speakers[split]):
            said = [order[(offset + position * count + repeat) % len(order)]
                    for order in orders.values() for repeat in range(count)]
            random.Random(f"quads-order-{seed}-{speaker.speaker_id}").shuffle(said)
            plan += [PlannedUtterance(split, speaker, phrase, f"{speaker.speaker_id}-{n:03d}")
                     for n, phrase in enumerate(said)]
    return plan


def plan_record_corpus(phrases: dict[str, list[Phrase]], speakers: dict[str, list[Speaker]],
                       seed: int) -> list[PlannedUtterance]:
    """Each phrase (a corpus record) is said once, by the split's speakers in turn after a seeded shuffle."""
    rng = random.Random(f"quads-records-{seed}")
    plan = []
    for split in SPLITS:
        order = rng.sample(phrases[split], len(phrases[split]))
        said: dict[str, int] = {}
        for position, phrase in enumerate(order):
            speaker = speakers[split][position % len(speakers[split])]
            n = said[speaker.speaker_id] = said.get(speaker.speaker_id, -1) + 1
            plan.append(PlannedUtterance(split, speaker, phrase, f"{speaker.speaker_id}-{n:04d}"))
    return sorted(plan, key=lambda item: (SPLITS.index(item.split), item.speaker.speaker_id, item.name))


def _augment_config(augment_setting: bool | AugmentConfig) -> AugmentConfig | None:
    if isinstance(augment_setting, AugmentConfig):
        return augment_setting
    return AugmentConfig() if augment_setting else None


def _write_corpus(out_dir: Path, table: PhraseTable, plan: list[PlannedUtterance],
                  speakers: dict[str, list[Speaker]], settings: dict[str, object], *, seed: int, jobs: int | None,
                  augment_config: AugmentConfig | None, force: bool, progress: bool, wait: bool = False
                  ) -> SynthReport:
    started = time.perf_counter()
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    if jobs < 1:
        raise ConfigError(f"jobs: must be at least 1, got {jobs}")
    binaries = find_engines({speaker.engine for group in speakers.values() for speaker in group})
    settings = {**settings, "augment": augment_config.to_dict() if augment_config else None,
                "engines": engine_versions(binaries)}
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: exists and is not a folder")
    with exclusive_writer(out_dir, "synth", wait=wait):
        return _write_locked(out_dir, table, plan, speakers, settings, seed=seed, jobs=jobs, binaries=binaries,
                             augment_config=augment_config, force=force, progress=progress, started=started)


def _write_locked(out_dir: Path, table: PhraseTable, plan: list[PlannedUtterance],
                  speakers: dict[str, list[Speaker]], settings: dict[str, object], *, seed: int, jobs: int,
                  binaries: dict[str, str], augment_config: AugmentConfig | None, force: bool, progress: bool,
                  started: float) -> SynthReport:
    _claim_folder(out_dir, settings, force)
    description = _description(settings, speakers, counts=None, audio_seconds=None, complete=False)
    atomic_write_text(out_dir / "synth.json", json.dumps(description, indent=2) + "\n")
    atomic_write_text(out_dir / "phrases.tsv", table.to_tsv())
    _remove_stray_temp_files(out_dir)

    todo = [item for item in plan if not _is_finished(out_dir / item.relative_path)]
    _run_jobs(todo, out_dir, binaries, augment_config, seed, jobs, progress)
    _remove_stray_temp_files(out_dir)

    audio_seconds = sum(soundfile.info(str(out_dir / item.relative_path)).frames for item in plan) / SAMPLE_RATE
    csv_paths = _write_csvs(out_dir, table, plan)
    counts = {split: sum(item.split == split for item in plan) for split in SPLITS}
    description = _description(settings, speakers, counts=counts, audio_seconds=audio_seconds, complete=True)
    atomic_write_text(out_dir / "synth.json", json.dumps(description, indent=2) + "\n")
    return SynthReport(out_dir=out_dir, utterances=counts, speakers={s: len(speakers[s]) for s in SPLITS},
                       audio_seconds=audio_seconds, synthesized=len(todo), reused=len(plan) - len(todo),
                       wall_seconds=time.perf_counter() - started, csv_paths=csv_paths)


def _claim_folder(out_dir: Path, settings: dict[str, object], force: bool) -> None:
    """Refuse to mix two different corpora (or a user's files) in one folder unless told to overwrite."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: exists and is not a folder")
    description_path = out_dir / "synth.json"
    previous: dict | None = None
    if description_path.exists():
        try:
            previous = json.loads(description_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = {}
    if previous is not None and previous.get("settings") == settings:
        return
    if not force:
        if previous is not None:
            old = previous.get("settings") or {}
            changed = sorted(key for key in set(old) | set(settings) if old.get(key) != settings.get(key))
            raise ConfigError(f"{description_path}: this folder holds a corpus made with other settings "
                              f"(different: {', '.join(changed) or 'unreadable synth.json'}); choose another "
                              f"--out, rerun with the same settings to resume, or pass --force to replace it")
        if out_dir.exists() and any(entry.name != LOCK_NAME for entry in out_dir.iterdir()):
            raise ConfigError(f"{out_dir}: folder is not empty and has no synth.json; choose an empty or new "
                              f"--out, or pass --force to write into it (replacing its data/ and wavs/speakers/)")
    for owned in (out_dir / WAV_FOLDER, out_dir / "data"):
        if owned.exists():
            shutil.rmtree(owned)
    out_dir.mkdir(parents=True, exist_ok=True)


def _description(settings: dict[str, object], speakers: dict[str, list[Speaker]], *, counts: dict[str, int] | None,
                 audio_seconds: float | None, complete: bool) -> dict[str, object]:
    return {
        "quads_version": __version__,
        "complete": complete,
        "settings": settings,
        "sample_rate": SAMPLE_RATE,
        "speakers_per_split": {split: len(speakers[split]) for split in SPLITS},
        "utterances_per_split": counts,
        "audio_minutes": None if audio_seconds is None else round(audio_seconds / 60, 2),
        "voices": [{"split": split, **speaker.to_dict()} for split in SPLITS for speaker in speakers[split]],
    }


def _is_finished(path: Path) -> bool:
    try:
        return path.stat().st_size >= MIN_WAV_BYTES
    except FileNotFoundError:
        return False


def _remove_stray_temp_files(out_dir: Path) -> None:
    """Temporary files left by a killed run; they are never renamed into place, so removing them is safe."""
    patterns = (f".*{TEMP_SUFFIX}", f"data/.*{TEMP_SUFFIX}", f"{WAV_FOLDER.as_posix()}/*/.*{TEMP_SUFFIX}")
    for pattern in patterns:
        for temp in out_dir.glob(pattern):
            temp.unlink(missing_ok=True)


def _run_jobs(todo: list[PlannedUtterance], out_dir: Path, binaries: dict[str, str],
              augment_config: AugmentConfig | None, seed: int, jobs: int, progress: bool) -> None:
    """Threads suffice: the work happens in the TTS subprocesses. The first failure stops the run."""
    if not todo:
        return
    for folder in {(out_dir / item.relative_path).parent for item in todo}:
        folder.mkdir(parents=True, exist_ok=True)
    executor = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="quads-synth")
    bar = tqdm(total=len(todo), unit="utt", desc="synth", disable=not progress, dynamic_ncols=True)
    try:
        pending: set[Future] = {executor.submit(_make_utterance, item, out_dir, binaries, augment_config, seed)
                                for item in todo}
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
            for future in done:
                future.result()
            bar.update(len(done))
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        bar.close()


def _make_utterance(item: PlannedUtterance, out_dir: Path, binaries: dict[str, str],
                    augment_config: AugmentConfig | None, seed: int) -> None:
    audio = speak(item.phrase.transcription, item.speaker, binaries[item.speaker.engine])
    if augment_config is not None:
        audio = augment(audio, augment_config, utterance_rng(seed, item.name), SAMPLE_RATE)
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
    with atomic_path(out_dir / item.relative_path, durable=False) as temp:
        soundfile.write(str(temp), pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")


def _write_csvs(out_dir: Path, table: PhraseTable, plan: list[PlannedUtterance]) -> dict[str, Path]:
    with_intent = table.schema != FSC_SCHEMA
    header = [*FSC_COLUMNS, "intent"] if with_intent else list(FSC_COLUMNS)
    paths = {}
    for split in SPLITS:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        rows = [item for item in plan if item.split == split]
        for index, item in enumerate(rows):
            slots = [item.phrase.slots.get(slot, "none") for slot in SLOT_COLUMNS]
            row = [index, item.relative_path, item.speaker.speaker_id, item.phrase.transcription, *slots]
            writer.writerow([*row, item.phrase.intent] if with_intent else row)
        paths[split] = out_dir / "data" / f"{split}_data.csv"
        atomic_write_text(paths[split], buffer.getvalue())
    return paths


