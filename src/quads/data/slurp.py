"""SLURP in its official layout: one JSON record per line, each with several recordings of the same sentence.

    dataset/slurp/{train,devel,test}.jsonl [train_synthetic.jsonl]
    audio/slurp_real/audio-<take>.flac (far-field) and audio-<take>-headset.flac (headset)   [slurp_synth/ likewise]

Every recording is one utterance; the split "devel" is our "valid". The label is scenario + "_" + action, because
the `intent` field is malformed in some records. SLURP's jsonl has no speaker ids, so `speaker` is the recording
take (the number in the file name, shared by the headset and far-field versions of one take), or "unknown" for a
name that does not follow the pattern; group by it to keep the versions of one take together, not to split by person.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from quads.data.corpus import Corpus, SourcedUtterance, Utterance, build_corpus, drop_missing_audio
from quads.errors import DataError

SLURP_SPLIT_FILES = {"train": "train.jsonl", "valid": "devel.jsonl", "test": "test.jsonl"}
SYNTHETIC_TRAIN_FILE = "train_synthetic.jsonl"
TEXT_KEYS = {"slurp_id": (int, str), "sentence": (str,), "scenario": (str,), "action": (str,)}
HEADSET_SUFFIX = "-headset.flac"
TAKE_PATTERN = re.compile(r"^audio-(-?\d+)(?:-headset)?$")
Recordings = Literal["headset", "farfield", "both"]


def read_slurp_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of one SLURP jsonl file, validated for the text fields only (no audio needed).

    Each record has at least slurp_id, sentence, scenario and action; a malformed line is a DataError naming file:line.
    """
    return [record for _line, record in iter_slurp_records(Path(path))]


def iter_slurp_records(path: Path, *, need_recordings: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each record; the one SLURP reader (`quads.synth.slurp_text` reads text with it)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not valid UTF-8 text ({error.reason})") from None
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{line_number}: malformed JSON ({error.msg} at column {error.colno})") from None
        check_record(record, path, line_number, need_recordings=need_recordings)
        yield line_number, record


def check_record(record: Any, path: Path, line: int, *, need_recordings: bool) -> None:
    where = f"{path}:{line}"
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, found {type(record).__name__}")
    for key, kind in TEXT_KEYS.items():
        if key not in record:
            raise DataError(f"{where}: record has no {key!r} key")
        value = record[key]
        if isinstance(value, bool) or not isinstance(value, kind) or (isinstance(value, str) and not value.strip()):
            kinds = " or ".join("number" if k is int else "non-empty string" for k in kind)
            raise DataError(f"{where}: {key!r} must be a {kinds}, found {value!r}")
    if not need_recordings:
        return
    recordings = record.get("recordings")
    if not isinstance(recordings, list):
        raise DataError(f"{where}: record has no 'recordings' list")
    for recording in recordings:
        if not isinstance(recording, dict) or not isinstance(recording.get("file"), str) or not recording["file"]:
            raise DataError(f"{where}: each recording must be an object with a 'file' name, found {recording!r}")


def slurp_label(record: dict[str, Any]) -> str:
    return f"{record['scenario'].strip()}_{record['action'].strip()}"


def recording_take(file_name: str) -> str:
    """The take id in 'audio-1434542201-headset.flac' -> '1434542201'; 'unknown' if the name has another form."""
    match = TAKE_PATTERN.match(Path(file_name).stem)
    return match.group(1) if match else "unknown"


def wanted(file_name: str, recordings: Recordings) -> bool:
    headset = file_name.endswith(HEADSET_SUFFIX)
    return recordings == "both" or (recordings == "headset") == headset


def find_audio_dir(root: Path, folder: str) -> Path:
    candidates = [root / folder, root.parent / folder, root / "audio" / folder, root.parent.parent / "audio" / folder]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    tried = ", ".join(str(candidate) for candidate in candidates)
    raise DataError(f"{root}: cannot find the SLURP audio folder {folder!r} (tried {tried}); pass audio_dir=")


def load_slurp(
    root: str | Path,
    recordings: Recordings = "headset",
    audio_dir: str | Path | None = None,
    *,
    include_synthetic: bool = False,
    skip_missing: bool = False,
    check_audio: bool = True,
    drop_unknown_labels: bool = False,
) -> Corpus:
    """train/devel/test jsonl under `root`, one utterance per recording of the chosen kind.

    recordings: "headset" (close-talk, ends in -headset.flac), "farfield" (all others) or "both".
    audio_dir: the slurp_real folder; by default looked up next to the jsonl files.
    include_synthetic: add train_synthetic.jsonl (audio in slurp_synth/) to train; all its recordings are used.
    """
    if recordings not in ("headset", "farfield", "both"):
        raise DataError(f"recordings must be 'headset', 'farfield' or 'both', got {recordings!r}")
    root = Path(root).expanduser().resolve()
    if audio_dir is None and not check_audio:  # planning from the jsonl alone: the audio may be elsewhere
        audio_dir = root / "slurp_real"
    real_audio = Path(audio_dir).expanduser().resolve() if audio_dir is not None else find_audio_dir(root, "slurp_real")
    if check_audio and not real_audio.is_dir():
        raise DataError(f"{real_audio}: SLURP audio folder not found")
    sources = [(split, root / name, real_audio, recordings) for split, name in SLURP_SPLIT_FILES.items()]
    if include_synthetic:
        sources.append(("train", root / SYNTHETIC_TRAIN_FILE, find_audio_dir(root, "slurp_synth"), "both"))
    splits: dict[str, list[SourcedUtterance]] = {split: [] for split in SLURP_SPLIT_FILES}
    for split, jsonl_path, audio_folder, kind in sources:
        rows = slurp_rows(jsonl_path, audio_folder, kind)
        splits[split] += drop_missing_audio(rows, jsonl_path, skip_missing=skip_missing, check_audio=check_audio)
    return build_corpus("slurp", root, splits, drop_unknown=drop_unknown_labels)


def slurp_rows(jsonl_path: Path, audio_folder: Path, recordings: Recordings) -> list[SourcedUtterance]:
    rows = []
    for line, record in iter_slurp_records(jsonl_path, need_recordings=True):
        for recording in record["recordings"]:
            file_name = recording["file"]
            if not wanted(file_name, recordings):
                continue
            utterance = Utterance(
                utt_id=Path(file_name).stem,
                path=audio_folder / file_name,
                label=slurp_label(record),
                speaker=recording_take(file_name),
                transcription=record["sentence"],
            )
            rows.append(SourcedUtterance(utterance, jsonl_path, line))
    return rows
