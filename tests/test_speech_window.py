"""What a model scores of a recording: long pauses trimmed to what training clips have, and a clip longer than
a Whisper student's position table cut to its loudest window instead of failing (`quads.runtime.speech_window`)."""

from __future__ import annotations

import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from quads.audio import AudioWarning, FrontEndConfig, LogMelSpectrogram
from quads.commands.evaluate import evaluate_model_file
from quads.compression.packed import save_packed
from quads.compression.quantize import post_training_quantize
from quads.compression.spec import QuantizationSpec
from quads.errors import ConfigError
from quads.models import build_classifier
from quads.runtime.level import TRAINED_PEAKS, TYPICAL_PEAK, clip_peaks, level_into_range
from quads.runtime.model import load
from quads.runtime.speech_window import (
    LEAD_SECONDS,
    TRAIL_SECONDS,
    loudest_starts,
    scored_window,
    speech_bounds,
    trim_long_silences,
)

RATE = 16000
FPS = 100.0  # log-mel frames per second
LABELS = ["activate_lights_none", "bring_shoes_none", "increase_heat_kitchen"]


def burst(lead: float, speech: float, trail: float, seed: int = 0) -> np.ndarray:
    """Quiet noise with a loud warbling tone (a stand-in for speech) from `lead` s to `lead + speech` s."""
    rng = np.random.default_rng(seed)
    wave = 0.001 * rng.standard_normal(int(RATE * (lead + speech + trail)))
    start, stop = int(RATE * lead), int(RATE * (lead + speech))
    time = np.arange(stop - start) / RATE
    wave[start:stop] += 0.3 * np.sin(2 * np.pi * (400 + 200 * np.sin(2 * np.pi * 3 * time)) * time)
    return wave.astype(np.float32)


def features_of(*waves: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(wave) for wave in waves])
    padded = torch.zeros(len(waves), int(lengths.max()))
    for row, wave in enumerate(waves):
        padded[row, : len(wave)] = torch.from_numpy(wave)
    return LogMelSpectrogram(FrontEndConfig())(padded, lengths)


def test_speech_bounds_find_the_loud_part_of_a_long_quiet_clip():
    features, mask = features_of(burst(lead=2.0, speech=1.0, trail=3.0))
    first, last = speech_bounds(features, mask)
    assert abs(int(first) - 200) <= 3 and abs(int(last) - 299) <= 3


def test_long_pauses_are_cut_to_a_training_clips_and_short_ones_are_kept():
    features, mask = features_of(burst(lead=2.0, speech=1.0, trail=3.0))
    first, last = (int(bound) for bound in speech_bounds(features, mask))
    trimmed, trimmed_mask = trim_long_silences(features, mask, FPS)
    start, end = first - round(LEAD_SECONDS[1] * FPS), last + 1 + round(TRAIL_SECONDS[1] * FPS)
    assert torch.equal(trimmed[0, :, : int(trimmed_mask.sum())], features[0, :, start:end])

    short, short_mask = features_of(burst(lead=0.3, speech=1.0, trail=0.5))
    kept, kept_mask = trim_long_silences(short, short_mask, FPS)
    assert kept is short and kept_mask is short_mask


def test_a_padded_batch_is_trimmed_row_by_row_as_each_clip_alone():
    waves = [burst(2.0, 1.0, 0.2, seed=1), burst(0.2, 0.8, 0.3, seed=2), burst(0.1, 0.5, 4.0, seed=3)]
    batch, batch_mask = trim_long_silences(*features_of(*waves), FPS)
    for row, wave in enumerate(waves):
        alone, alone_mask = trim_long_silences(*features_of(wave), FPS)
        length = int(alone_mask.sum())
        assert int(batch_mask[row].sum()) == length
        assert torch.allclose(batch[row, :, :length], alone[0, :, :length], atol=1e-5)
        assert not batch[row, :, length:].any()  # padding stays zero


def test_a_clip_too_long_for_the_model_keeps_its_loudest_window():
    features, mask = features_of(burst(lead=1.0, speech=1.0, trail=0.2, seed=4), burst(0.1, 0.5, 0.1, seed=5))
    assert int(loudest_starts(features, mask, 50)[0]) in range(98, 155)  # a window inside the burst (100-199)
    kept, kept_mask, cropped = scored_window(features, mask, FPS, max_frames=50)
    assert cropped.tolist() == [True, True] and kept.shape[-1] == 50 and bool(kept_mask.all())
    kept, kept_mask, cropped = scored_window(features, mask, FPS, max_frames=500)
    assert cropped.tolist() == [False, False]


def tiny_whisper_file(path: Path, positions: int = 50) -> Path:
    """A 1-layer Whisper-shaped student that hears at most 2 * `positions` log-mel frames, packed at 4 bits."""
    torch.manual_seed(0)
    encoder = {"type": "whisper", "d_model": 16, "encoder_layers": 1, "encoder_attention_heads": 2,
               "encoder_ffn_dim": 32, "num_mel_bins": 80, "max_source_positions": positions}
    classifier = build_classifier({"encoder": encoder, "num_labels": len(LABELS)}).eval()
    quantized = post_training_quantize(classifier, QuantizationSpec(bits=4)).export()
    float_state = {name: tensor for name, tensor in classifier.state_dict().items() if name not in quantized}
    metadata = {"architecture": classifier.config_dict(), "frontend": asdict(FrontEndConfig()), "labels": LABELS,
                "recipe": "ptq", "bits": 4, "metrics": {}}
    save_packed(path, float_state, quantized, metadata)
    return path


def test_the_runtime_scores_a_recording_longer_than_the_model_hears_with_a_warning(tmp_path):
    model = load(tiny_whisper_file(tmp_path / "m.quads"))
    assert model.max_seconds == pytest.approx(1.0)
    wave = burst(lead=0.2, speech=2.5, trail=0.2)
    with pytest.warns(AudioWarning, match=r"waveform 0: 2\.9 s long, longer than the 1 s"):
        cut = model.predict_waveforms([wave])[0]
    assert cut.label in LABELS
    model.score_window = False
    with pytest.raises(ConfigError, match="longer than its 100"):
        model.predict_waveforms([wave])


def test_a_long_pause_before_the_speech_does_not_change_what_the_runtime_hears(tmp_path):
    model = load(tiny_whisper_file(tmp_path / "m.quads", positions=500))
    speech = burst(lead=0.0, speech=1.0, trail=0.0, seed=6)
    quiet = 0.001 * np.random.default_rng(7).standard_normal(int(RATE * 4.0)).astype(np.float32)
    near, late = np.concatenate([quiet[: int(RATE * 0.25)], speech]), np.concatenate([quiet, speech])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a trimmed pause is no warning
        scores = [model.predict_waveforms([wave])[0].top for wave in (near, late)]
    assert [label for label, _ in scores[0]] == [label for label, _ in scores[1]]
    assert np.allclose([p for _, p in scores[0]], [p for _, p in scores[1]], atol=0.02)


def test_quads_eval_scores_a_too_long_file_instead_of_failing(tmp_path):
    model = tiny_whisper_file(tmp_path / "m.quads")
    clips = tmp_path / "clips"
    clips.mkdir()
    soundfile.write(clips / "long.wav", burst(0.2, 2.5, 0.2), RATE)
    soundfile.write(clips / "short.wav", burst(0.1, 0.5, 0.1), RATE)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"path,label\nclips/long.wav,{LABELS[0]}\nclips/short.wav,{LABELS[1]}\n", encoding="utf-8")
    with pytest.warns(AudioWarning, match=r"1 of 2 audio files .*long\.wav.* loudest 1 s"):
        result = evaluate_model_file(model, manifest, latency_samples=2, progress=False)
    assert result.utterances == 2
    with pytest.raises(ConfigError, match="longer than its 100"):
        evaluate_model_file(model, manifest, latency_samples=0, progress=False, as_recorded=True)


def test_a_quiet_or_loud_recording_is_scored_at_a_training_level_and_a_typical_one_as_it_is():
    typical = features_of(burst(lead=0.2, speech=1.0, trail=0.2))
    peak = float(clip_peaks(*typical)[0])
    assert TRAINED_PEAKS[0] <= peak <= TRAINED_PEAKS[1]
    assert level_into_range(*typical) is typical[0]
    for gain_db in (-40.0, 20.0):  # 30 dB quieter than any training clip / louder than the loudest
        wave = burst(lead=0.2, speech=1.0, trail=0.2) * 10 ** (gain_db / 20)
        features, mask = features_of(wave.astype(np.float32))
        moved = level_into_range(features, mask)
        assert float(clip_peaks(moved, mask)[0]) == pytest.approx(TYPICAL_PEAK, abs=1e-4)
        assert torch.allclose(moved - features, torch.full_like(features, (TYPICAL_PEAK - float(
            clip_peaks(features, mask)[0])) / 4.0), atol=1e-5)  # a gain: every feature shifted alike


def test_a_gain_on_the_waveform_does_not_change_what_the_runtime_hears_outside_the_training_levels(tmp_path):
    model = load(tiny_whisper_file(tmp_path / "m.quads", positions=500))
    wave = burst(lead=0.2, speech=1.0, trail=0.2, seed=8)
    quiet, quieter = (wave * 10 ** (db / 20) for db in (-40.0, -55.0))
    first, second = model.predict_waveforms([quiet.astype(np.float32), quieter.astype(np.float32)])
    assert np.allclose([p for _, p in first.top], [p for _, p in second.top], atol=1e-3)
