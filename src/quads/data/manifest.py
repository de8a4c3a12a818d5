"""A plain CSV manifest, the simplest way to bring your own recordings:

    path,label[,speaker][,split][,transcription]
    clips/0001.wav,lights_on,alice

Paths are relative to the manifest's folder (or absolute). Without a `split` column the whole manifest is the
"test" split, which is what evaluation wants; with one, each row names train, valid or test.
"""

from __future__ import annotations

from pathlib import Path

from quads.data.corpus import SPLITS, Corpus, LabelMap, SourcedUtterance, Utterance, build_corpus, drop_missing_audio
from quads.data.csv_rows import CsvRow, check_header_columns, read_csv_rows
from quads.errors import DataError

REQUIRED_COLUMNS = ("path", "label")
OPTIONAL_COLUMNS = ("speaker", "split", "transcription")
UNKNOWN_SPEAKER = "unknown"


def load_manifest(
    csv_path: str | Path,
    label_map: LabelMap | None = None,
    *,
    skip_missing: bool = False,
    check_audio: bool = True,
    drop_unknown_labels: bool = False,
) -> Corpus:
    """Utterances of a manifest; with `label_map` (a trained model's) every label must be in it.

    Without `label_map` the map is built from the train rows, or from all rows when there is no train split
    (an evaluation-only manifest).
    """
    csv_path = Path(csv_path).expanduser().resolve()
    _, rows = read_csv_rows(csv_path, check_manifest_header)
    parsed = [
        (manifest_split(row, csv_path), SourcedUtterance(manifest_utterance(row, csv_path), csv_path, row.line))
        for row in rows
    ]
    kept = {id(item) for item in drop_missing_audio([item for _, item in parsed], csv_path, skip_missing=skip_missing,
                                                  check_audio=check_audio)}
    splits: dict[str, list[SourcedUtterance]] = {split: [] for split in SPLITS}
    for split, item in parsed:
        if id(item) in kept:
            splits[split].append(item)
    if label_map is None and not splits["train"]:
        label_map = LabelMap.from_utterances(item.utterance for items in splits.values() for item in items)
    return build_corpus("manifest", csv_path.parent, splits, label_map=label_map, drop_unknown=drop_unknown_labels)


def check_manifest_header(header: list[str], csv_path: Path) -> None:
    names = [name.strip() for name in header]
    check_header_columns(names, REQUIRED_COLUMNS, REQUIRED_COLUMNS + OPTIONAL_COLUMNS, csv_path,
                         f"'path,label' plus any of {', '.join(OPTIONAL_COLUMNS)}", what="manifest header")


def manifest_utterance(row: CsvRow, csv_path: Path) -> Utterance:
    fields = {name.strip(): value.strip() for name, value in row.fields.items()}
    empty = [name for name in REQUIRED_COLUMNS if not fields[name]]
    if empty:
        raise DataError(f"{csv_path}:{row.line}: empty field(s) {', '.join(empty)}")
    listed = Path(fields["path"]).expanduser()
    path = listed if listed.is_absolute() else csv_path.parent / listed
    # The path without its suffix, so clips/a/1.wav and clips/b/1.wav stay distinct.
    utt_id = listed.with_suffix("").as_posix() if not listed.is_absolute() else path.with_suffix("").as_posix()
    return Utterance(
        utt_id=utt_id,
        path=path,
        label=fields["label"],
        speaker=fields.get("speaker") or UNKNOWN_SPEAKER,
        transcription=fields.get("transcription", ""),
    )


def manifest_split(row: CsvRow, csv_path: Path) -> str:
    split = row.fields.get("split", "test").strip() or "test"
    if split not in SPLITS:
        raise DataError(f"{csv_path}:{row.line}: split {split!r} is not one of {', '.join(SPLITS)}")
    return split
