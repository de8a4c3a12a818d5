"""SLURP loader on fixtures in the official layout: hand-written records, and records cut from the real devel.jsonl."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile

from quads.data import DataWarning, load_slurp, open_corpus, read_slurp_records
from quads.errors import DataError


def shared_data() -> Path:
    return Path(os.environ.get("QUADS_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def record(slurp_id: int, sentence: str, scenario: str, action: str, takes: list[int], **extra) -> dict:
    recordings = []
    for take in takes:
        recordings += [{"file": f"audio-{take}-headset.flac", "wer": 0.0}, {"file": f"audio-{take}.flac", "wer": 0.1}]
    return {
        "slurp_id": slurp_id,
        "sentence": sentence,
        "intent": f"{scenario}_{action}",
        "scenario": scenario,
        "action": action,
        "recordings": recordings,
        **extra,
    }


HAND_WRITTEN = {
    "train": [
        record(1, "wake me up at seven", "alarm", "set", [100, 101]),
        record(2, "what's the weather", "weather", "query", [102]),
    ],
    "devel": [record(3, "set an alarm for nine", "alarm", "set", [-103])],
    "test": [record(4, "is it raining", "weather", "query", [104], intent="query")],  # malformed intent field
}


def write_flac(path: Path) -> None:
    soundfile.write(path, np.zeros(800, dtype=np.float32), 16000, format="FLAC")


def make_slurp(base: Path, records: dict = HAND_WRITTEN) -> Path:
    """base/dataset/slurp/{train,devel,test}.jsonl and base/audio/slurp_real/*.flac, as the SLURP release has it."""
    root, audio = base / "dataset" / "slurp", base / "audio" / "slurp_real"
    root.mkdir(parents=True)
    audio.mkdir(parents=True)
    for name, split_records in records.items():
        lines = [json.dumps(r, ensure_ascii=False) for r in split_records]
        (root / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        for r in split_records:
            for recording in r["recordings"]:
                write_flac(audio / recording["file"])
    return root


def replace_line(path: Path, line: int, text: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_headset_recordings_are_the_default_one_utterance_each(tmp_path):
    corpus = load_slurp(make_slurp(tmp_path))
    assert corpus.name == "slurp"
    assert [u.utt_id for u in corpus.splits["train"]] == ["audio-100-headset", "audio-101-headset", "audio-102-headset"]
    assert corpus.splits["train"][0].path == tmp_path / "audio" / "slurp_real" / "audio-100-headset.flac"


def test_devel_becomes_valid(tmp_path):
    corpus = load_slurp(make_slurp(tmp_path))
    assert set(corpus.splits) == {"train", "valid", "test"}
    assert [u.transcription for u in corpus.splits["valid"]] == ["set an alarm for nine"]


@pytest.mark.parametrize(("recordings", "count"), [("headset", 3), ("farfield", 3), ("both", 6)])
def test_recording_choice_selects_headset_or_far_field_files(tmp_path, recordings, count):
    corpus = load_slurp(make_slurp(tmp_path), recordings=recordings)
    names = [u.path.name for u in corpus.splits["train"]]
    assert len(names) == count
    if recordings == "farfield":
        assert not any(name.endswith("-headset.flac") for name in names)


def test_label_is_scenario_action_even_when_the_intent_field_is_malformed(tmp_path):
    corpus = load_slurp(make_slurp(tmp_path))
    assert [u.label for u in corpus.splits["test"]] == ["weather_query"]
    assert corpus.label_map.labels == ["alarm_set", "weather_query"]


def test_speaker_is_the_recording_take_shared_by_headset_and_far_field(tmp_path):
    corpus = load_slurp(make_slurp(tmp_path), recordings="both")
    assert [u.speaker for u in corpus.splits["valid"]] == ["-103", "-103"]


def test_audio_folder_is_found_next_to_the_jsonl_files_or_given(tmp_path):
    root = make_slurp(tmp_path)
    moved = tmp_path / "elsewhere"
    (tmp_path / "audio" / "slurp_real").rename(moved)
    with pytest.raises(DataError, match=r"cannot find the SLURP audio folder 'slurp_real'.*audio_dir="):
        load_slurp(root)
    assert len(load_slurp(root, audio_dir=moved).splits["train"]) == 3
    moved.rename(root.parent / "slurp_real")
    assert load_slurp(root).splits["test"][0].path.parent == root.parent / "slurp_real"


def test_malformed_json_line_names_file_and_line(tmp_path):
    root = make_slurp(tmp_path)
    replace_line(root / "train.jsonl", 2, '{"slurp_id": 2, "sentence": ')
    with pytest.raises(DataError, match=r"train\.jsonl:2: malformed JSON"):
        load_slurp(root)


def test_record_without_scenario_names_file_line_and_key(tmp_path):
    root = make_slurp(tmp_path)
    broken = {k: v for k, v in HAND_WRITTEN["devel"][0].items() if k != "scenario"}
    replace_line(root / "devel.jsonl", 1, json.dumps(broken))
    with pytest.raises(DataError, match=r"devel\.jsonl:1: record has no 'scenario' key"):
        load_slurp(root)


def test_record_without_recordings_is_rejected_for_audio_but_fine_as_text(tmp_path):
    root = make_slurp(tmp_path)
    broken = {k: v for k, v in HAND_WRITTEN["test"][0].items() if k != "recordings"}
    replace_line(root / "test.jsonl", 1, json.dumps(broken))
    with pytest.raises(DataError, match=r"test\.jsonl:1: record has no 'recordings' list"):
        load_slurp(root)
    assert read_slurp_records(root / "test.jsonl")[0]["sentence"] == "is it raining"


def test_read_slurp_records_needs_no_audio(tmp_path):
    path = tmp_path / "devel.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in HAND_WRITTEN["train"]) + "\n\n", encoding="utf-8")
    records = read_slurp_records(path)
    assert [r["slurp_id"] for r in records] == [1, 2]


def test_read_slurp_records_rejects_a_non_object_line(tmp_path):
    path = tmp_path / "devel.jsonl"
    path.write_text(json.dumps(HAND_WRITTEN["train"][0]) + "\n[1, 2]\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"devel\.jsonl:2: expected a JSON object"):
        read_slurp_records(path)


def test_missing_split_file_is_named(tmp_path):
    root = make_slurp(tmp_path)
    (root / "test.jsonl").unlink()
    with pytest.raises(DataError, match=r"test\.jsonl: file not found"):
        load_slurp(root)


def test_missing_recording_is_an_error_or_skipped_with_a_count(tmp_path):
    root = make_slurp(tmp_path)
    (tmp_path / "audio" / "slurp_real" / "audio-101-headset.flac").unlink()
    with pytest.raises(DataError, match=r"train\.jsonl: 1 of 3 audio files .*audio-101-headset\.flac \(line 1\)"):
        load_slurp(root)
    with pytest.warns(DataWarning, match="skipped 1 of 3"):
        corpus = load_slurp(root, skip_missing=True)
    assert len(corpus.splits["train"]) == 2


def test_unknown_recordings_choice_is_rejected(tmp_path):
    with pytest.raises(DataError, match="'headset', 'farfield' or 'both'"):
        load_slurp(make_slurp(tmp_path), recordings="close")


def test_synthetic_train_records_are_added_when_asked(tmp_path):
    root = make_slurp(tmp_path)
    synth = tmp_path / "audio" / "slurp_synth"
    synth.mkdir()
    synthetic = {"slurp_id": 9, "sentence": "alarm at ten", "scenario": "alarm", "action": "set"}
    synthetic["recordings"] = [{"file": "audio-900.flac"}]
    (root / "train_synthetic.jsonl").write_text(json.dumps(synthetic) + "\n", encoding="utf-8")
    write_flac(synth / "audio-900.flac")
    assert len(load_slurp(root).splits["train"]) == 3
    corpus = load_slurp(root, include_synthetic=True)
    assert corpus.splits["train"][-1].path == synth / "audio-900.flac"


def test_open_corpus_detects_slurp_from_the_folder_or_a_jsonl_file(tmp_path):
    root = make_slurp(tmp_path)
    assert open_corpus(root).name == "slurp"
    assert len(open_corpus(root / "devel.jsonl", recordings="both").splits["valid"]) == 2


# --- records cut from the real SLURP devel.jsonl -----------------------------------------------------------------


def real_devel_records() -> list[dict]:
    path = shared_data() / "slurp" / "devel.jsonl"
    if not path.is_file():
        pytest.skip(f"shared SLURP data not found at {path}")
    with path.open(encoding="utf-8") as stream:
        return [json.loads(next(stream)) for _ in range(300)]


def test_real_slurp_records_load_with_their_recordings(tmp_path):
    by_label = defaultdict(list)
    for r in real_devel_records():
        by_label[f"{r['scenario']}_{r['action']}"].append(r)
    chosen = [records[:3] for records in by_label.values() if len(records) >= 3][:3]
    assert len(chosen) == 3, "the first 300 devel records should hold three intents with three records each"
    split_records = {name: [records[i] for records in chosen] for i, name in enumerate(("train", "devel", "test"))}
    corpus = load_slurp(make_slurp(tmp_path, split_records), recordings="both")

    for split, name in (("train", "train"), ("valid", "devel"), ("test", "test")):
        files = [rec["file"] for r in split_records[name] for rec in r["recordings"]]
        assert [u.path.name for u in corpus.splits[split]] == files
    first = split_records["train"][0]
    utterance = corpus.splits["train"][0]
    assert utterance.label == f"{first['scenario']}_{first['action']}"
    assert utterance.transcription == first["sentence"]
    assert utterance.speaker.lstrip("-").isdigit()
    assert len(corpus.label_map) == 3


def test_real_devel_file_parses_as_text_records():
    path = shared_data() / "slurp" / "devel.jsonl"
    if not path.is_file():
        pytest.skip(f"shared SLURP data not found at {path}")
    records = read_slurp_records(path)
    assert len(records) == 2033
    assert len({f"{r['scenario']}_{r['action']}" for r in records}) >= 50
