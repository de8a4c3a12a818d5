"""`quads synth --from-slurp`: SLURP sentences spoken by synthetic speakers, labelled scenario_action."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from quads.data.slurp import read_slurp_records
from quads.errors import DataError
from quads.synth import synthesize_slurp_corpus
from quads.synth.slurp_text import read_slurp_jsonl, read_slurp_splits

HAVE_TTS = shutil.which("espeak-ng") is not None and shutil.which("flite") is not None


def slurp_reference() -> Path:
    shared = os.environ.get("QUADS_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
    return Path(shared) / "slurp"


def record(sentence: str, scenario: str, action: str, slurp_id: int, intent: str | None = None) -> str:
    return json.dumps({"slurp_id": slurp_id, "sentence": sentence, "scenario": scenario, "action": action,
                       "intent": intent or f"{scenario}_{action}", "recordings": []})


def test_bad_json_line_is_reported_with_file_and_line(tmp_path):
    path = tmp_path / "devel.jsonl"
    path.write_text(record("wake me up at six", "alarm", "set", 1) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}:2: malformed JSON"):
        read_slurp_jsonl(path)


def test_record_without_sentence_is_reported_with_file_line_and_field(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text(json.dumps({"slurp_id": 1, "scenario": "alarm", "action": "set"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}:1: record has no 'sentence' key"):
        read_slurp_jsonl(path)


def test_synthesiser_and_corpus_loader_read_slurp_the_same_way(tmp_path):
    """One SLURP reader: a record the corpus loader rejects is rejected by the synthesiser with the same words."""
    path = tmp_path / "devel.jsonl"
    path.write_text(json.dumps({"slurp_id": 1, "sentence": "hi", "scenario": "", "action": "set"}) + "\n",
                    encoding="utf-8")
    with pytest.raises(DataError) as from_loader:
        read_slurp_records(path)
    with pytest.raises(DataError) as from_synthesiser:
        read_slurp_jsonl(path)
    assert str(from_synthesiser.value) == str(from_loader.value)


def test_label_is_scenario_and_action_even_when_the_intent_field_is_malformed(tmp_path):
    path = tmp_path / "devel.jsonl"
    path.write_text(record("how is the weather", "weather", "query", 7, intent="query") + "\n", encoding="utf-8")
    assert read_slurp_jsonl(path)[0].intent == "weather_query"


def test_missing_train_split_is_carved_from_devel_and_slurp_test_is_kept(tmp_path):
    devel = [record(f"set an alarm number {i}", "alarm", "set", i) for i in range(20)]
    devel += [record(f"play song {i}", "play", "music", 100 + i) for i in range(20)]
    (tmp_path / "devel.jsonl").write_text("\n".join(devel) + "\n", encoding="utf-8")
    (tmp_path / "test.jsonl").write_text(record("what time is it", "datetime", "query", 500) + "\n", encoding="utf-8")
    splits = read_slurp_splits(tmp_path, seed=0)
    assert [r.sentence for r in splits["test"]] == ["what time is it"]
    assert len(splits["train"]) + len(splits["valid"]) == 40
    assert not {r.slurp_id for r in splits["train"]} & {r.slurp_id for r in splits["valid"]}
    for intent in ("alarm_set", "play_music"):    # stratified: each intent in both, about 82% / 18%
        assert sum(r.intent == intent for r in splits["valid"]) in (3, 4)


@pytest.mark.tts
@pytest.mark.skipif(not HAVE_TTS, reason="espeak-ng and flite are not installed")
def test_slurp_fixture_becomes_an_fsc_layout_corpus_with_an_intent_column(tmp_path):
    reference = slurp_reference()
    if not (reference / "devel.jsonl").exists() or not (reference / "test.jsonl").exists():
        pytest.skip("reference SLURP text not available")
    fixture = tmp_path / "slurp"
    fixture.mkdir()
    for name in ("devel.jsonl", "test.jsonl"):
        lines = (reference / name).read_text(encoding="utf-8").splitlines()[:30]
        (fixture / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    sentences = {name: {json.loads(line)["sentence"] for line in (fixture / name).read_text().splitlines()}
                 for name in ("devel.jsonl", "test.jsonl")}
    report = synthesize_slurp_corpus(tmp_path / "c", fixture, speakers=10, seed=0, jobs=2, limit=8, progress=False)
    assert (report.utterances["train"], report.utterances["test"]) == (8, 8)
    assert 1 <= report.utterances["valid"] <= 8     # devel's share after train was carved out of it
    speakers_by_split = {}
    for split in ("train", "valid", "test"):
        csv_path = tmp_path / "c" / "data" / f"{split}_data.csv"
        assert csv_path.read_text(encoding="utf-8").splitlines()[0] == (
            ",path,speakerId,transcription,action,object,location,intent")
        with csv_path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        for row in rows:
            assert (tmp_path / "c" / row["path"]).exists()
            assert row["intent"].endswith("_" + row["action"])
        source = "test.jsonl" if split == "test" else "devel.jsonl"
        assert {row["transcription"] for row in rows} <= sentences[source]
        speakers_by_split[split] = {row["speakerId"] for row in rows}
    assert not speakers_by_split["train"] & (speakers_by_split["valid"] | speakers_by_split["test"])
    assert not speakers_by_split["valid"] & speakers_by_split["test"]
