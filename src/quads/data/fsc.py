"""Fluent Speech Commands in its official layout, which the built-in synthetic corpora also use.

    ROOT/data/{train,valid,test}_data.csv   header ",path,speakerId,transcription,action,object,location"
    ROOT/wavs/...                           paths in the CSVs are relative to ROOT

The intent is "action_object_location" (31 intents in the real FSC). Synthetic corpora with free-form intents add an
`intent` column, which then wins, and may leave action/object/location empty.
"""

from __future__ import annotations

from pathlib import Path

from quads.data.corpus import (
    SPLITS,
    Corpus,
    SourcedUtterance,
    Utterance,
    build_corpus,
    drop_missing_audio,
)
from quads.data.csv_rows import CsvRow, check_header_columns, read_csv_rows
from quads.errors import DataError

FSC_COLUMNS = ("", "path", "speakerId", "transcription", "action", "object", "location")
SLOT_COLUMNS = ("action", "object", "location")
INTENT_COLUMN = "intent"


def fsc_split_file(root: Path, split: str) -> Path:
    return root / "data" / f"{split}_data.csv"


def load_fsc(root: str | Path, *, skip_missing: bool = False, drop_unknown_labels: bool = False,
             check_audio: bool = True) -> Corpus:
    """The official train/valid/test split; the label map is built from train.

    skip_missing: skip rows whose audio file does not exist (with a counted warning) instead of failing.
    drop_unknown_labels: drop valid/test rows whose intent never occurs in train instead of failing.
    """
    root = Path(root).expanduser().resolve()
    if not (root / "data").is_dir():
        raise DataError(f"{root}: not a Fluent Speech Commands folder (expected {root / 'data'}/train_data.csv)")
    splits = {}
    for split in SPLITS:
        csv_path = fsc_split_file(root, split)
        rows = read_fsc_csv(csv_path, root)
        splits[split] = drop_missing_audio(rows, csv_path, skip_missing=skip_missing, check_audio=check_audio)
    return build_corpus("fsc", root, splits, drop_unknown=drop_unknown_labels)


def read_fsc_csv(csv_path: Path, root: Path) -> list[SourcedUtterance]:
    """Parse and validate one split file; audio existence is checked by the caller."""
    header, rows = read_csv_rows(csv_path, check_fsc_header)
    has_intent = INTENT_COLUMN in header
    return [SourcedUtterance(fsc_utterance(row, root, csv_path, has_intent), csv_path, row.line) for row in rows]


def check_fsc_header(header: list[str], csv_path: Path) -> None:
    expected = ",".join(FSC_COLUMNS)
    if not header or header[0].strip() != "":
        raise DataError(
            f"{csv_path}:1: the first column must be the unnamed index of the official layout; "
            f"expected header {expected!r}[,intent], found {','.join(header)!r}"
        )
    names = [name.strip() for name in header[1:]]
    check_header_columns(names, FSC_COLUMNS[1:], (*FSC_COLUMNS[1:], INTENT_COLUMN), csv_path,
                         f"{expected!r} optionally followed by ',intent'")


def fsc_utterance(row: CsvRow, root: Path, csv_path: Path, has_intent: bool) -> Utterance:
    fields = {name.strip(): value.strip() for name, value in row.fields.items()}
    intent = fields.get(INTENT_COLUMN, "") if has_intent else ""
    required = ["path", "speakerId", "transcription"] + ([INTENT_COLUMN] if has_intent else list(SLOT_COLUMNS))
    empty = [name for name in required if not fields[name]]
    if empty:
        raise DataError(f"{csv_path}:{row.line}: empty field(s) {', '.join(empty)}")
    label = intent or "_".join(fields[name] for name in SLOT_COLUMNS)
    relative = Path(fields["path"])
    return Utterance(
        utt_id=relative.stem,
        path=relative if relative.is_absolute() else root / relative,
        label=label,
        speaker=fields["speakerId"],
        transcription=fields["transcription"],
    )
