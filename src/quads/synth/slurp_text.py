"""SLURP's text as a script for TTS: read `{train,devel,test}.jsonl` and decide which split says what.

Only the `sentence`, `scenario` and `action` fields are used; the label is `scenario_action` because SLURP's
own `intent` field is malformed in some records. SLURP's splits are kept where their file exists
(devel -> valid); a missing split is carved, stratified by intent, out of the first present file in the
order train, devel, test. With the reference data (devel + test) that gives train and valid from devel and
keeps SLURP's test as the test set.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from quads.data.corpus import SPLITS
from quads.data.slurp import SLURP_SPLIT_FILES, iter_slurp_records, slurp_label
from quads.errors import DataError
from quads.synth.voices import SPLIT_FRACTIONS


@dataclass(frozen=True)
class SlurpRecord:
    sentence: str
    scenario: str
    action: str
    slurp_id: str
    origin: str          # "file:line", for messages and provenance

    @property
    def intent(self) -> str:
        return slurp_label({"scenario": self.scenario, "action": self.action})


def read_slurp_jsonl(path: Path) -> list[SlurpRecord]:
    """The text records of one SLURP jsonl file, read and checked by `quads.data.slurp` (no audio needed)."""
    records = [SlurpRecord(sentence=" ".join(record["sentence"].split()), scenario=record["scenario"].strip(),
                           action=record["action"].strip(), slurp_id=str(record["slurp_id"]), origin=f"{path}:{line}")
               for line, record in iter_slurp_records(Path(path))]
    if not records:
        raise DataError(f"{path}: no records")
    return records


def read_slurp_splits(slurp_dir: str | Path, seed: int, limit: int | None = None) -> dict[str, list[SlurpRecord]]:
    """Records for train/valid/test from whichever SLURP files exist; at most `limit` per split when given."""
    slurp_dir = Path(slurp_dir)
    if not slurp_dir.is_dir():
        raise DataError(f"{slurp_dir}: SLURP folder not found")
    sources = {split: read_slurp_jsonl(slurp_dir / name)
               for split, name in SLURP_SPLIT_FILES.items() if (slurp_dir / name).is_file()}
    if not sources:
        raise DataError(f"{slurp_dir}: none of {', '.join(SLURP_SPLIT_FILES.values())} found")
    splits = carve_missing_splits(sources, seed)
    if limit is not None:
        if limit < 1:
            raise DataError(f"limit: must be at least 1, got {limit}")
        rng = random.Random(f"quads-slurp-limit-{seed}")
        splits = {split: [records[i] for i in sorted(rng.sample(range(len(records)), min(limit, len(records))))]
                  for split, records in splits.items()}
    empty = [split for split, records in splits.items() if not records]
    if empty:
        raise DataError(f"{slurp_dir}: too few records to make a {empty[0]} split")
    return splits


def carve_missing_splits(sources: dict[str, list[SlurpRecord]], seed: int) -> dict[str, list[SlurpRecord]]:
    """Keep each present split; carve each missing one out of the first present source (train, valid, test)."""
    donor = next(split for split in SPLITS if split in sources)
    served = {split: [split] for split in sources}
    served[donor] = [split for split in SPLITS if split == donor or split not in sources]
    splits: dict[str, list[SlurpRecord]] = {}
    rng = random.Random(f"quads-slurp-splits-{seed}")
    for source, targets in served.items():
        if len(targets) == 1:
            splits[targets[0]] = list(sources[source])
            continue
        parts = _stratified_parts(sources[source], [SPLIT_FRACTIONS[t] for t in targets], rng)
        splits.update(zip(targets, parts, strict=True))
    return {split: splits[split] for split in SPLITS}


def _stratified_parts(records: list[SlurpRecord], fractions: list[float],
                      rng: random.Random) -> list[list[SlurpRecord]]:
    """Divide records in the given proportions within every intent, so rare intents still reach train first."""
    total = sum(fractions)
    bounds = [sum(fractions[: i + 1]) / total for i in range(len(fractions))]
    by_intent: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        by_intent.setdefault(record.intent, []).append(index)
    parts: list[list[int]] = [[] for _ in fractions]
    for intent in sorted(by_intent):
        indices = by_intent[intent]
        rng.shuffle(indices)
        start = 0
        for part, bound in zip(parts, bounds, strict=True):
            end = max(round(len(indices) * bound), 1 if part is parts[0] else start)
            part.extend(indices[start:end])
            start = end
    return [[records[i] for i in sorted(part)] for part in parts]
