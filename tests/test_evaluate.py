"""`quads eval` on a tiny packed model file and tiny FSC-layout / manifest corpora built in tmp_path."""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import asdict
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import soundfile
import torch

from quads.audio import FrontEndConfig
from quads.cli import main
from quads.commands.costs import mean_gmacs, spread_sample, theoretical_file_bytes
from quads.commands.evaluate import evaluate_model_file, predict_features, score_predictions
from quads.compression.packed import save_packed
from quads.compression.quantize import post_training_quantize
from quads.compression.spec import QuantizationSpec
from quads.errors import DataError
from quads.features import compute_features
from quads.models import build_classifier
from quads.models.conv import ConvConfig
from quads.runtime.model import load

LABELS = ["activate_lights_none", "bring_shoes_none", "increase_heat_kitchen"]
SLOTS = {label: label.split("_") for label in LABELS}
FSC_HEADER = ",path,speakerId,transcription,action,object,location"
TONES = {LABELS[0]: 300.0, LABELS[1]: 900.0, LABELS[2]: 2000.0}


def write_tone(path: Path, frequency: float, seconds: float, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    time = np.arange(int(16000 * seconds)) / 16000
    wave = 0.3 * np.sin(2 * np.pi * frequency * time) + 0.01 * rng.standard_normal(time.size)
    soundfile.write(path, wave.astype(np.float32), 16000, subtype="PCM_16")


def make_fsc(root: Path, test_labels: list[str], train_labels: list[str] = LABELS) -> Path:
    """data/{split}_data.csv in the official layout; test clips of distinct lengths (0.3 s, 0.4 s, ...)."""
    (root / "data").mkdir(parents=True)
    splits = {"train": train_labels, "valid": LABELS, "test": test_labels}
    for split, labels in splits.items():
        lines = [FSC_HEADER]
        for index, label in enumerate(labels):
            relative = f"wavs/speakers/spk-{split}/{split}-{index:03d}.wav"
            write_tone(root / relative, TONES.get(label, 500.0), 0.3 + 0.1 * (index % 4), seed=index)
            lines.append(",".join([str(index), relative, f"spk-{split}", "words", *label.split("_")]))
        (root / "data" / f"{split}_data.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def make_manifest(root: Path, labels: list[str]) -> Path:
    lines = ["path,label"]
    for index, label in enumerate(labels):
        write_tone(root / "clips" / f"{index}.wav", TONES.get(label, 500.0), 0.35, seed=index)
        lines.append(f"clips/{index}.wav,{label}")
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest


def write_model(path: Path, bits: int = 4):
    """A tiny conv student with 4-bit codebooks (PTQ), packed like `quads export` does; returns PackedInfo."""
    torch.manual_seed(0)
    encoder = {"type": "conv", **asdict(ConvConfig(stem_channels=16, stage_channels=(16,), stage_strides=(2,),
                                                   stage_blocks=(1,), kernel_size=3))}
    classifier = build_classifier({"encoder": encoder, "num_labels": len(LABELS)}).eval()
    quantizer = post_training_quantize(classifier, QuantizationSpec(bits=bits))
    quantized = quantizer.export()
    float_state = {name: tensor for name, tensor in classifier.state_dict().items() if name not in quantized}
    metadata = {"architecture": classifier.config_dict(), "frontend": asdict(FrontEndConfig()), "labels": LABELS,
                "recipe": "ptq", "bits": bits, "metrics": {"test_accuracy": 0.5}}
    return save_packed(path, float_state, quantized, metadata)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """One `quads eval` run through the CLI, shared by the tests that read its outputs."""
    root = tmp_path_factory.mktemp("eval")
    info = write_model(root / "model.quads")
    corpus = make_fsc(root / "fsc", [LABELS[i % 3] for i in range(7)])
    code = main(["eval", str(root / "model.quads"), "--data", str(corpus), "--json", str(root / "result.json"),
                 "--out-dir", str(root / "out"), "--latency-samples", "4", "--quiet"])
    assert code == 0
    return root, info, json.loads((root / "result.json").read_text())


def test_eval_json_reports_scores_sizes_gmacs_latency_and_model_metadata(evaluated):
    root, info, result = evaluated
    assert result["utterances"] == 7 and result["split"] == "test"
    assert result["recipe"] == "ptq" and result["bits"] == 4 and result["training_metrics"] == {"test_accuracy": 0.5}
    per_intent_f1 = [scores["f1"] for scores in result["per_intent"]]
    assert result["f1"] == pytest.approx(sum(per_intent_f1) / len(per_intent_f1))  # the macro average
    correct = sum(row[i] for i, row in enumerate(result["confusion"]))
    assert result["accuracy"] == pytest.approx(correct / 7)
    assert result["params"] == load(root / "model.quads").classifier.num_parameters()
    assert result["size_bytes"] == os.path.getsize(root / "model.quads") == info.file_bytes
    assert result["theoretical_bytes"] == info.theoretical_bytes < result["size_bytes"]
    assert 0 < result["gmacs"] < result["gmacs_30s"]  # clips of 0.3-0.6 s cost less than 30 s of padding
    assert result["latency_samples"] == 4 and 0 < result["latency_ms_median"] <= result["latency_ms_p90"]
    assert result["torch_threads"] == torch.get_num_threads()
    assert [scores["intent"] for scores in result["per_intent"]] == result["intents"]
    assert sum(scores["support"] for scores in result["per_intent"]) == 7
    assert json.loads((root / "out" / "eval.json").read_text()) == result


def test_confusion_csv_is_square_over_the_scored_intents_and_counts_every_utterance(evaluated):
    root, _, result = evaluated
    with open(root / "out" / "confusion.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    intents = result["intents"]
    assert len(rows) == len(intents) + 1 and all(len(row) == len(intents) + 1 for row in rows)
    assert rows[0][1:] == intents and [row[0] for row in rows[1:]] == intents
    assert sum(int(cell) for row in rows[1:] for cell in row[1:]) == 7
    with open(root / "out" / "per_intent.csv", newline="", encoding="utf-8") as handle:
        per_intent = list(csv.DictReader(handle))
    assert [row["intent"] for row in per_intent] == intents


def test_confusion_png_is_an_image_and_markdown_lists_every_intent(evaluated):
    root, _, result = evaluated
    image = matplotlib.image.imread(root / "out" / "confusion.png")
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300
    markdown = (root / "out" / "eval.md").read_text()
    assert f"{100 * result['accuracy']:.2f} %" in markdown
    assert all(f"| {intent} |" in markdown for intent in result["intents"])


def test_batched_scoring_predicts_what_the_runtime_predicts_file_by_file(tmp_path):
    write_model(tmp_path / "model.quads")
    model = load(tmp_path / "model.quads")
    paths = []
    for index, seconds in enumerate((0.25, 0.5, 0.31, 0.8, 0.42)):
        paths.append(tmp_path / f"{index}.wav")
        write_tone(paths[-1], 200.0 + 400 * index, seconds, seed=index)
    from quads.data import Utterance

    utterances = [Utterance(str(i), path, LABELS[0], "s") for i, path in enumerate(paths)]
    features = compute_features(utterances, model.frontend_config, None, progress=False)
    batched = predict_features(model.classifier, features, batch_size=3)
    one_by_one = [LABELS.index(model.predict_files([path])[0].label) for path in paths]
    assert batched == one_by_one


def test_macro_f1_averages_over_intents_in_the_data_or_the_predictions():
    labels = ["a", "b", "c", "d"]
    truth, predicted = [0, 0, 1, 1], [0, 1, 1, 2]  # "c" only predicted, "d" neither spoken nor predicted
    accuracy, macro_f1, intents, per_intent, confusion = score_predictions(truth, predicted, labels)
    assert intents == ["a", "b", "c"]
    assert accuracy == pytest.approx(0.5)
    f1_a, f1_b, f1_c = 2 / 3, 0.5, 0.0  # a: P 1, R 1/2; b: P 1/2, R 1/2; c: never right
    assert macro_f1 == pytest.approx((f1_a + f1_b + f1_c) / 3)
    assert [scores.support for scores in per_intent] == [2, 2, 0]
    assert confusion == [[1, 1, 0], [0, 1, 1], [0, 0, 0]]


def test_gmacs_are_counted_once_per_distinct_length_and_averaged_per_utterance(monkeypatch):
    calls = []

    def fake_gmacs(model, n_mels, frames):
        calls.append(frames)
        return frames * 0.001 + (frames / 100) ** 2  # any non-linear cost

    monkeypatch.setattr("quads.commands.costs.gmacs_at_length", fake_gmacs)
    mean = mean_gmacs(torch.nn.Identity(), 80, [100, 300, 100, 100])
    assert sorted(calls) == [100, 300]
    assert mean == pytest.approx((3 * fake_gmacs(None, 80, 100) + fake_gmacs(None, 80, 300)) / 4)


def test_theoretical_size_read_from_the_header_matches_what_save_packed_reports(tmp_path):
    for bits in (2, 8):
        info = write_model(tmp_path / f"model{bits}.quads", bits=bits)
        assert theoretical_file_bytes(info.path) == info.theoretical_bytes


def test_latency_sample_is_spread_over_the_set_and_never_repeats():
    assert spread_sample(3, 50) == [0, 1, 2]
    chosen = spread_sample(1000, 10)
    assert len(chosen) == 10 and chosen[0] == 0 and chosen[-1] == 999
    assert spread_sample(5, 0) == []


def test_a_test_label_the_model_does_not_know_is_named_with_the_split_file(tmp_path):
    write_model(tmp_path / "model.quads")
    more = [*LABELS, "deactivate_music_none"]  # a corpus with a fourth intent the model never saw
    corpus = make_fsc(tmp_path / "fsc", more, train_labels=more)
    with pytest.raises(DataError, match=r"test_data\.csv.*'deactivate_music_none' \(1\)"):
        evaluate_model_file(tmp_path / "model.quads", corpus, latency_samples=0, progress=False)


def test_a_manifest_is_evaluated_as_its_test_split_and_unknown_labels_are_refused(tmp_path):
    write_model(tmp_path / "model.quads")
    manifest = make_manifest(tmp_path / "ok", [LABELS[0], LABELS[2]])
    result = evaluate_model_file(tmp_path / "model.quads", manifest, latency_samples=0, progress=False)
    assert result.utterances == 2 and result.latency_ms_median is None and result.latency_samples == 0
    assert math.isclose(result.gmacs, result.to_row("PTQ")["gmacs"])
    bad = make_manifest(tmp_path / "bad", [LABELS[0], "play_music_none", "play_music_none"])
    with pytest.raises(DataError, match=r"manifest\.csv.*'play_music_none' \(2\)"):
        evaluate_model_file(tmp_path / "model.quads", bad, latency_samples=0, progress=False)


def test_cli_reports_a_bad_data_path_without_a_traceback(tmp_path, capsys):
    write_model(tmp_path / "model.quads")
    code = main(["eval", str(tmp_path / "model.quads"), "--data", str(tmp_path / "nowhere"),
                 "--json", str(tmp_path / "r.json"), "--quiet"])
    assert code == 2 and "nowhere" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_cli_refuses_zero_threads(tmp_path, capsys):
    code = main(["eval", str(tmp_path / "model.quads"), "--data", str(tmp_path), "--json", str(tmp_path / "r.json"),
                 "--threads", "0"])
    assert code == 2 and "--threads" in capsys.readouterr().err
