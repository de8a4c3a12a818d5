"""CSV manifests (bring your own recordings), corpus auto-detection, and the waveform Dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from quads.config import DataConfig
from quads.data import DataWarning, LabelMap, load_manifest, open_corpus
from quads.errors import ConfigError, DataError
from quads.training.experiment import load_training_corpus


def write_wav(path: Path, samples: int = 1600, rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, np.full(samples, 0.25, dtype=np.float32), rate, subtype="FLOAT")
    return path


def make_manifest(folder: Path, lines: list[str], header: str = "path,label,speaker") -> Path:
    """folder/manifest.csv listing `lines`; each listed audio file that does not exist yet is written, except
    names starting with "missing"."""
    folder.mkdir(parents=True, exist_ok=True)
    for line in lines:
        audio = folder / line.split(",")[0]  # an absolute path stays absolute
        if not audio.name.startswith("missing") and not audio.exists():
            write_wav(audio)
    path = folder / "manifest.csv"
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


def test_manifest_without_split_column_is_all_test(tmp_path):
    path = make_manifest(tmp_path, ["clips/a/1.wav,lights_on,ann", "clips/b/1.wav,lights_off,bob"])
    corpus = load_manifest(path)
    assert corpus.name == "manifest" and corpus.root == tmp_path
    assert (len(corpus.splits["train"]), len(corpus.splits["valid"]), len(corpus.splits["test"])) == (0, 0, 2)
    assert [u.utt_id for u in corpus.splits["test"]] == ["clips/a/1", "clips/b/1"]
    assert corpus.splits["test"][0].path == tmp_path / "clips" / "a" / "1.wav"
    assert corpus.label_map.labels == ["lights_off", "lights_on"]


def test_absolute_paths_and_a_missing_speaker_column_are_accepted(tmp_path):
    absolute = write_wav(tmp_path / "abs" / "x.wav")
    path = make_manifest(tmp_path / "lists", [f"{absolute},stop"], header="path,label")
    utterance = load_manifest(path).splits["test"][0]
    assert utterance.path == absolute and utterance.speaker == "unknown"


def test_split_column_assigns_rows_and_train_builds_the_label_map(tmp_path):
    lines = ["t1.wav,go,a,train", "t2.wav,stop,a,train", "v.wav,go,b,valid", "x.wav,stop,c,test"]
    corpus = load_manifest(make_manifest(tmp_path, lines, header="path,label,speaker,split"))
    assert [len(corpus.splits[s]) for s in ("train", "valid", "test")] == [2, 1, 1]
    assert corpus.label_map.labels == ["go", "stop"]


def test_bad_split_value_names_file_and_line(tmp_path):
    path = make_manifest(tmp_path, ["a.wav,go,x,train", "b.wav,go,x,dev"], header="path,label,speaker,split")
    with pytest.raises(DataError, match=r"manifest\.csv:3: split 'dev' is not one of train, valid, test"):
        load_manifest(path)


def test_label_outside_the_given_label_map_names_label_file_and_line(tmp_path):
    path = make_manifest(tmp_path, ["a.wav,go,x", "b.wav,jump,x"])
    with pytest.raises(DataError, match=r"manifest\.csv:3: label 'jump' in split 'test' does not occur in the given"):
        load_manifest(path, LabelMap(["go", "stop"]))
    corpus = load_manifest(make_manifest(tmp_path, ["a.wav,go,x"]), LabelMap(["go", "stop"]))
    assert corpus.label_map.labels == ["go", "stop"]


def test_wrong_header_is_named(tmp_path):
    path = make_manifest(tmp_path, ["a.wav,go"], header="file,label")
    with pytest.raises(DataError, match=r"manifest\.csv:1: wrong manifest header \(missing \['path'\]; unexpected"):
        load_manifest(path)


def test_wrong_field_count_and_empty_label_name_the_line(tmp_path):
    with pytest.raises(DataError, match=r"manifest\.csv:3: expected 3 comma-separated fields"):
        load_manifest(make_manifest(tmp_path, ["a.wav,go,x", "b.wav,go"]))
    with pytest.raises(DataError, match=r"manifest\.csv:2: empty field\(s\) label"):
        load_manifest(make_manifest(tmp_path, ["a.wav,,x"]))


def test_missing_audio_is_an_error_or_skipped(tmp_path):
    path = make_manifest(tmp_path, ["a.wav,go,x", "missing.wav,go,x"])
    with pytest.raises(DataError, match=r"manifest\.csv: 1 of 2 audio files .*missing\.wav \(line 3\)"):
        load_manifest(path)
    with pytest.warns(DataWarning, match="skipped 1 of 2"):
        assert len(load_manifest(path, skip_missing=True).splits["test"]) == 1


def test_missing_manifest_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nothing\.csv: file not found"):
        load_manifest(tmp_path / "nothing.csv")


# --- open_corpus ----------------------------------------------------------------------------------------------------


def make_tiny_fsc(root: Path) -> Path:
    (root / "data").mkdir(parents=True)
    for index, split in enumerate(("train", "valid", "test")):
        write_wav(root / "wavs" / f"{split}.wav")
        lines = [",path,speakerId,transcription,action,object,location"]
        lines.append(f"{index},wavs/{split}.wav,s{index},Lights on,activate,lights,none")
        (root / "data" / f"{split}_data.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_open_corpus_detects_fsc_from_its_root_or_data_folder(tmp_path):
    root = make_tiny_fsc(tmp_path / "fsc")
    assert open_corpus(root).name == "fsc"
    assert open_corpus(root / "data").root == root.resolve()


def test_training_accepts_fsc_given_by_its_data_folder(tmp_path):
    """data.path may name FSC's root or its data/ folder: the format is detected once, not guessed again."""
    root = make_tiny_fsc(tmp_path / "fsc")
    for path in (root, root / "data"):
        corpus = load_training_corpus(DataConfig(path=str(path)), progress=False)
        assert corpus.name == "fsc" and corpus.root == root.resolve()


def test_open_corpus_detects_a_manifest_and_passes_options(tmp_path):
    path = make_manifest(tmp_path, ["a.wav,go,x", "missing.wav,go,x"])
    with pytest.warns(DataWarning):
        assert open_corpus(path, skip_missing=True).name == "manifest"


def test_open_corpus_rejects_an_option_the_format_does_not_have(tmp_path):
    with pytest.raises(ConfigError, match=r"\['recordings'\] do not apply to load_fsc"):
        open_corpus(make_tiny_fsc(tmp_path / "fsc"), recordings="both")


def test_open_corpus_explains_an_unrecognised_folder(tmp_path):
    with pytest.raises(DataError, match="not a recognised corpus"):
        open_corpus(tmp_path)
    with pytest.raises(DataError, match="no such file or folder"):
        open_corpus(tmp_path / "absent")
