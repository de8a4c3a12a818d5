"""Fluent Speech Commands loader on fixtures in the exact official layout, and the LabelMap contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from quads.data import DataWarning, LabelMap, load_fsc
from quads.errors import DataError

HEADER = ",path,speakerId,transcription,action,object,location"

ROWS = {
    "train": [
        ("spk1", "Turn on the lights", "activate", "lights", "none"),
        ("spk1", "Bring me my shoes", "bring", "shoes", "none"),
        ("spk2", "Turn the heat up in the kitchen", "increase", "heat", "kitchen"),
    ],
    "valid": [("spk3", "Lights on", "activate", "lights", "none")],
    "test": [("spk4", "Switch on the kitchen’s heating", "increase", "heat", "kitchen")],
}


def write_wav(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, np.zeros(1600, dtype=np.float32), 16000, subtype="PCM_16")


def make_fsc(root: Path, rows: dict = ROWS, *, header: str = HEADER, extra: dict | None = None) -> Path:
    """An FSC corpus: data/{split}_data.csv with the unnamed index column, wavs under wavs/speakers/<speaker>/."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        lines = [header]
        for index, (speaker, text, action, obj, location) in enumerate(split_rows):
            relative = f"wavs/speakers/{speaker}/{split}-{index:04d}.wav"
            write_wav(root / relative)
            values = [str(index), relative, speaker, text, action, obj, location]
            lines.append(",".join(values + (extra or {}).get((split, index), [])))
        (root / "data" / f"{split}_data.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def csv_line(root: Path, split: str, line: int, new: str) -> None:
    path = root / "data" / f"{split}_data.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[line - 1] = new
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_official_layout_gives_three_splits_labelled_action_object_location(tmp_path):
    corpus = load_fsc(make_fsc(tmp_path))
    assert corpus.name == "fsc" and {k: len(v) for k, v in corpus.splits.items()} == {"train": 3, "valid": 1, "test": 1}
    first = corpus.splits["train"][0]
    assert first.label == "activate_lights_none" and first.speaker == "spk1"
    assert first.utt_id == "train-0000" and first.path == tmp_path / "wavs/speakers/spk1/train-0000.wav"
    assert first.path.is_absolute() and first.transcription == "Turn on the lights"


def test_curly_apostrophe_in_a_phrase_is_read_as_utf8(tmp_path):
    corpus = load_fsc(make_fsc(tmp_path))
    assert corpus.splits["test"][0].transcription == "Switch on the kitchen’s heating"


def test_label_map_is_the_sorted_train_intents(tmp_path):
    corpus = load_fsc(make_fsc(tmp_path))
    assert corpus.label_map.labels == ["activate_lights_none", "bring_shoes_none", "increase_heat_kitchen"]


def test_intent_column_overrides_the_slots(tmp_path):
    rows = {split: [(*row[:2], "", "", "") for row in split_rows] for split, split_rows in ROWS.items()}
    intents = {("train", 0): ["lights_on"], ("train", 1): ["shoes"], ("train", 2): ["heat_up"]}
    intents |= {("valid", 0): ["lights_on"], ("test", 0): ["heat_up"]}
    corpus = load_fsc(make_fsc(tmp_path, rows, header=HEADER + ",intent", extra=intents))
    assert [u.label for u in corpus.splits["train"]] == ["lights_on", "shoes", "heat_up"]


def test_missing_split_file_is_named(tmp_path):
    make_fsc(tmp_path)
    (tmp_path / "data" / "valid_data.csv").unlink()
    with pytest.raises(DataError, match=r"valid_data\.csv: file not found"):
        load_fsc(tmp_path)


def test_folder_without_data_subfolder_is_rejected(tmp_path):
    with pytest.raises(DataError, match="not a Fluent Speech Commands folder"):
        load_fsc(tmp_path)


@pytest.mark.parametrize(
    "header",
    [
        "path,speakerId,transcription,action,object,location",  # no unnamed index column
        ",path,speaker,transcription,action,object,location",  # renamed column
        ",path,speakerId,transcription,action,object,location,room",  # unknown extra column
    ],
)
def test_wrong_header_names_file_and_line_one(tmp_path, header):
    make_fsc(tmp_path)
    csv_line(tmp_path, "train", 1, header)
    with pytest.raises(DataError, match=r"train_data\.csv:1: .*(wrong header|unnamed index)"):
        load_fsc(tmp_path)


def test_row_with_wrong_field_count_names_file_and_line(tmp_path):
    make_fsc(tmp_path)
    csv_line(tmp_path, "train", 3, "1,wavs/speakers/spk1/train-0001.wav,spk1,Bring me my shoes,bring,shoes")
    with pytest.raises(DataError, match=r"train_data\.csv:3: expected 7 comma-separated fields.*found 6"):
        load_fsc(tmp_path)


def test_empty_field_names_file_line_and_field(tmp_path):
    make_fsc(tmp_path)
    csv_line(tmp_path, "test", 2, "0,wavs/speakers/spk4/test-0000.wav,spk4,Heat,increase,,kitchen")
    with pytest.raises(DataError, match=r"test_data\.csv:2: empty field\(s\) object"):
        load_fsc(tmp_path)


def test_missing_audio_is_an_error_listing_count_and_paths(tmp_path):
    make_fsc(tmp_path)
    (tmp_path / "wavs/speakers/spk1/train-0000.wav").unlink()
    (tmp_path / "wavs/speakers/spk1/train-0001.wav").unlink()
    with pytest.raises(DataError, match=r"train_data\.csv: 2 of 3 audio files .*train-0000\.wav \(line 2\)"):
        load_fsc(tmp_path)


def test_missing_audio_can_be_skipped_with_a_counted_warning(tmp_path):
    make_fsc(tmp_path)
    (tmp_path / "wavs/speakers/spk1/train-0001.wav").unlink()
    with pytest.warns(DataWarning, match=r"skipped 1 of 3"):
        corpus = load_fsc(tmp_path, skip_missing=True)
    assert [u.utt_id for u in corpus.splits["train"]] == ["train-0000", "train-0002"]


def test_test_label_unseen_in_train_names_split_file_line_and_label(tmp_path):
    rows = dict(ROWS, test=[ROWS["test"][0], ("spk4", "Play music", "activate", "music", "none")])
    make_fsc(tmp_path, rows)
    with pytest.raises(DataError, match=r"test_data\.csv:3: label 'activate_music_none' in split 'test'"):
        load_fsc(tmp_path)


def test_unseen_labels_can_be_dropped_with_a_counted_warning(tmp_path):
    rows = dict(ROWS, test=[ROWS["test"][0], ("spk4", "Play music", "activate", "music", "none")])
    with pytest.warns(DataWarning, match=r"dropped 1 utterances"):
        corpus = load_fsc(make_fsc(tmp_path, rows), drop_unknown_labels=True)
    assert [u.label for u in corpus.splits["test"]] == ["increase_heat_kitchen"]


def test_the_same_audio_listed_twice_is_rejected(tmp_path):
    make_fsc(tmp_path)
    csv_line(tmp_path, "valid", 2, "0,wavs/speakers/spk1/train-0000.wav,spk3,Lights on,activate,lights,none")
    with pytest.raises(DataError, match=r"valid_data\.csv:2: utterance id 'train-0000' already used at .*:2"):
        load_fsc(tmp_path)


def test_invalid_utf8_is_a_data_error_with_the_line(tmp_path):
    make_fsc(tmp_path)
    path = tmp_path / "data" / "train_data.csv"
    path.write_bytes(path.read_bytes().replace(b"Bring", b"Br\xffing"))
    with pytest.raises(DataError, match=r"train_data\.csv:3: not valid UTF-8"):
        load_fsc(tmp_path)


# --- LabelMap -----------------------------------------------------------------------------------------------------


def test_label_map_encodes_and_decodes():
    labels = LabelMap(["a_b", "c_d"])
    assert labels.encode("c_d") == 1 and labels.decode(0) == "a_b" and len(labels) == 2


def test_unknown_label_error_names_the_label_and_where_it_came_from():
    with pytest.raises(DataError, match=r"unknown intent label 'x_y' \(split 'test', a\.csv line 4\)"):
        LabelMap(["a_b"]).encode("x_y", where="split 'test', a.csv line 4")


def test_label_map_round_trips_through_a_json_file_without_leaving_temp_files(tmp_path):
    labels = LabelMap(["turn_on", "café_öffnen"])
    labels.save(tmp_path / "labels.json")
    assert LabelMap.load(tmp_path / "labels.json") == labels
    assert [p.name for p in tmp_path.iterdir()] == ["labels.json"]
    assert json.loads((tmp_path / "labels.json").read_text(encoding="utf-8")) == {"labels": labels.labels}


def test_malformed_label_map_file_is_named(tmp_path):
    (tmp_path / "labels.json").write_text('{"labels": [1, 2]}')
    with pytest.raises(DataError, match=r"labels\.json: expected"):
        LabelMap.load(tmp_path / "labels.json")


def test_duplicate_labels_are_rejected():
    with pytest.raises(DataError, match="more than once"):
        LabelMap(["a", "b", "a"])
