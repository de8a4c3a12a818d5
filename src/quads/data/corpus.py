"""The corpus contract every loader returns: utterances, splits and the intent label map.

Loaders differ only in how they read their index files; the checks a user needs when a corpus is broken (audio that
is not there, labels in valid/test that train never saw, the same utterance listed twice) live here so that every
format reports them the same way.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from quads.atomic import atomic_write_text
from quads.errors import DataError

SPLITS = ("train", "valid", "test")
MISSING_EXAMPLES_SHOWN = 5


class DataWarning(UserWarning):
    """Rows of a corpus were skipped on request (missing audio, unknown labels); the message gives the count."""


@dataclass(frozen=True)
class Utterance:
    utt_id: str  # unique within the corpus (FSC: wav path stem; SLURP: recording file stem)
    path: Path  # absolute path to the audio file
    label: str  # intent string (FSC: "action_object_location"; SLURP: "scenario_action")
    speaker: str
    transcription: str = ""


class LabelMap:
    """The ordered intent vocabulary: index i of the classifier's output means `labels[i]`."""

    def __init__(self, labels: Iterable[str]) -> None:
        self.labels: list[str] = list(labels)
        self._index = {label: index for index, label in enumerate(self.labels)}
        if len(self._index) != len(self.labels):
            duplicates = sorted({label for label in self.labels if self.labels.count(label) > 1})
            raise DataError(f"label map lists these labels more than once: {duplicates}")

    @classmethod
    def from_utterances(cls, utterances: Iterable[Utterance]) -> LabelMap:
        """Sorted, so the same training set always gives the same class indices."""
        return cls(sorted({utterance.label for utterance in utterances}))

    def encode(self, label: str, *, where: str | None = None) -> int:
        """Class index of `label`; `where` (e.g. "split 'test', file x.csv line 12") is named in the error."""
        try:
            return self._index[label]
        except KeyError:
            location = f" ({where})" if where else ""
            preview = ", ".join(self.labels[:8]) + (", ..." if len(self.labels) > 8 else "")
            raise DataError(
                f"unknown intent label {label!r}{location}; the label map has {len(self.labels)} labels: {preview}"
            ) from None

    def decode(self, index: int) -> str:
        if not 0 <= index < len(self.labels):
            raise DataError(f"class index {index} is outside the label map (0..{len(self.labels) - 1})")
        return self.labels[index]

    def __contains__(self, label: object) -> bool:
        return label in self._index

    def __len__(self) -> int:
        return len(self.labels)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelMap) and other.labels == self.labels

    def __repr__(self) -> str:
        return f"LabelMap({len(self.labels)} labels)"

    def to_json(self) -> str:
        return json.dumps({"labels": self.labels}, ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str, *, source: str = "label map") -> LabelMap:
        try:
            content = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"{source}: not valid JSON ({error})") from None
        labels = content.get("labels") if isinstance(content, dict) else None
        if not isinstance(labels, list) or not all(isinstance(label, str) and label for label in labels):
            raise DataError(f'{source}: expected {{"labels": [non-empty strings]}}')
        return cls(labels)

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> LabelMap:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise DataError(f"{path}: cannot read label map ({error.strerror or error})") from None
        return cls.from_json(text, source=str(path))


@dataclass
class Corpus:
    name: str  # "fsc" | "slurp" | "manifest"
    root: Path
    splits: dict[str, list[Utterance]]  # keys "train", "valid", "test" (SLURP devel -> "valid")
    label_map: LabelMap = field(default_factory=lambda: LabelMap([]))  # from train

    def __repr__(self) -> str:
        sizes = ", ".join(f"{split} {len(items)}" for split, items in self.splits.items())
        return f"Corpus({self.name!r}, {str(self.root)!r}, {sizes}, {len(self.label_map)} intents)"


@dataclass(frozen=True)
class SourcedUtterance:
    """An utterance with the index-file line it came from, kept while loading so errors can point at it."""

    utterance: Utterance
    source: Path
    line: int

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


def drop_missing_audio(rows: list[SourcedUtterance], source: Path, *, skip_missing: bool,
                       check_audio: bool = True) -> list[SourcedUtterance]:
    """Audio listed but absent is an error (a half-downloaded corpus silently shrinks results) unless asked to skip.
    `check_audio=False` keeps every row unchecked (planning a run from the manifests alone: `--dry-run`)."""
    missing = [row for row in rows if check_audio and not row.utterance.path.is_file()]
    if not missing:
        return rows
    examples = ", ".join(f"{row.utterance.path} (line {row.line})" for row in missing[:MISSING_EXAMPLES_SHOWN])
    more = f" and {len(missing) - MISSING_EXAMPLES_SHOWN} more" if len(missing) > MISSING_EXAMPLES_SHOWN else ""
    if not skip_missing:
        raise DataError(
            f"{source}: {len(missing)} of {len(rows)} audio files listed do not exist, e.g. {examples}{more}; "
            "fix the paths, or skip them: --set data.skip_missing_audio=true (quads compress / pretune), "
            "--skip-missing (quads features), skip_missing=True (Python API)"
        )
    warnings.warn(
        f"{source}: skipped {len(missing)} of {len(rows)} utterances whose audio does not exist, e.g. {examples}",
        DataWarning,
        stacklevel=3,
    )
    missing_ids = {id(row) for row in missing}
    return [row for row in rows if id(row) not in missing_ids]


def drop_unknown_labels(
    rows: list[SourcedUtterance], split: str, label_map: LabelMap, *, drop: bool, reference: str = "the train split"
) -> list[SourcedUtterance]:
    """A valid/test label that train never saw cannot be predicted; say so, or drop those rows if asked."""
    unknown = [row for row in rows if row.utterance.label not in label_map]
    if not unknown:
        return rows
    if not drop:
        first = unknown[0]
        raise DataError(
            f"{first.where}: label {first.utterance.label!r} in split {split!r} does not occur in {reference} "
            f"({len(unknown)} such rows in total); remove those rows from the split file, or drop them: "
            "--drop-unknown-labels (quads features), drop_unknown_labels=True (Python API)"
        )
    labels = sorted({row.utterance.label for row in unknown})
    warnings.warn(
        f"split {split!r}: dropped {len(unknown)} utterances whose labels do not occur in {reference}: {labels[:10]}",
        DataWarning,
        stacklevel=3,
    )
    return [row for row in rows if row.utterance.label in label_map]


def check_unique_ids(splits: dict[str, list[SourcedUtterance]]) -> None:
    """Caches and reports key utterances by id, so two rows must never share one."""
    seen: dict[str, SourcedUtterance] = {}
    for rows in splits.values():
        for row in rows:
            earlier = seen.setdefault(row.utterance.utt_id, row)
            if earlier is not row:
                raise DataError(
                    f"{row.where}: utterance id {row.utterance.utt_id!r} already used at {earlier.where} "
                    "(each audio file may be listed only once)"
                )


def build_corpus(
    name: str,
    root: Path,
    splits: dict[str, list[SourcedUtterance]],
    *,
    label_map: LabelMap | None = None,
    drop_unknown: bool = False,
) -> Corpus:
    """Label map from train (unless given), unknown-label checks on the other splits, then the plain contract."""
    check_unique_ids(splits)
    if label_map is None:
        label_map = LabelMap.from_utterances(row.utterance for row in splits["train"])
        checked, reference = [split for split in SPLITS if split != "train"], "the train split"
    else:
        checked, reference = list(SPLITS), "the given label map"
    for split in checked:
        splits[split] = drop_unknown_labels(splits[split], split, label_map, drop=drop_unknown, reference=reference)
    return Corpus(
        name=name,
        root=root,
        splits={split: [row.utterance for row in splits[split]] for split in SPLITS},
        label_map=label_map,
    )
