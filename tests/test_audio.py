"""The audio front-end: loading rules and equality with Whisper's log-mel definition."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from quads.audio import (
    HOP_LENGTH,
    N_FFT,
    SAMPLE_RATE,
    FrontEndConfig,
    LogMelSpectrogram,
    load_audio,
    mel_filters,
    pad_batch,
)
from quads.errors import AudioError, ConfigError


def tone(seconds: float, rate: int = SAMPLE_RATE, frequency: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def speech_like(samples: int, seed: int = 0) -> np.ndarray:
    """Noise with a loud and a quiet stretch, so the 8-decade clamp and the per-utterance max both matter."""
    rng = np.random.default_rng(seed)
    audio = 0.05 * rng.standard_normal(samples)
    audio[: samples // 3] *= 10 * np.sin(np.arange(samples // 3) / 7.0)
    audio[2 * samples // 3 :] *= 1e-4
    return audio.astype(np.float32)


def whisper_log_mel(audio: np.ndarray, n_mels: int) -> np.ndarray:
    """openai/whisper's log_mel_spectrogram (whisper/audio.py) for one clip, verbatim apart from the filters."""
    waveform = torch.from_numpy(audio)
    stft = torch.stft(waveform, N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT), return_complex=True)
    magnitudes = stft[..., :-1].abs() ** 2
    mel_spec = torch.from_numpy(mel_filters(n_mels).copy()) @ magnitudes
    log_spec = torch.clamp(mel_spec, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).numpy()


# --- load_audio -------------------------------------------------------------------------------------------------


def test_wav_loads_as_float32_mono(tmp_path):
    path = tmp_path / "tone.wav"
    soundfile.write(path, tone(0.5), SAMPLE_RATE, subtype="PCM_16")
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.shape == (8000,)
    np.testing.assert_allclose(audio, tone(0.5), atol=1e-4)


def test_flac_loads(tmp_path):
    path = tmp_path / "tone.flac"
    soundfile.write(path, tone(0.25), SAMPLE_RATE)
    assert load_audio(path).shape == (4000,)


def test_stereo_is_down_mixed_to_the_channel_mean(tmp_path):
    left, right = tone(0.1), np.zeros(1600, dtype=np.float32)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), SAMPLE_RATE, subtype="FLOAT")
    audio = load_audio(path)
    assert audio.ndim == 1
    np.testing.assert_allclose(audio, left / 2, atol=1e-6)


def test_8khz_audio_is_resampled_to_16khz_with_twice_the_samples(tmp_path):
    path = tmp_path / "phone.wav"
    soundfile.write(path, tone(1.0, rate=8000, frequency=300.0), 8000, subtype="PCM_16")
    audio = load_audio(path)
    assert audio.shape == (16000,)
    reference = tone(1.0, frequency=300.0)
    np.testing.assert_allclose(audio[200:-200], reference[200:-200], atol=5e-3)


def test_resampling_can_be_forbidden_and_the_error_names_file_and_rates(tmp_path):
    path = tmp_path / "phone.wav"
    soundfile.write(path, tone(0.1, rate=8000), 8000)
    with pytest.raises(AudioError, match=r"phone\.wav.*8000 Hz.*16000 Hz"):
        load_audio(path, allow_resample=False)


def test_missing_file_is_an_audio_error_naming_it(tmp_path):
    with pytest.raises(AudioError, match=r"nowhere\.wav.*not found"):
        load_audio(tmp_path / "nowhere.wav")


def test_file_without_samples_is_an_audio_error(tmp_path):
    path = tmp_path / "empty.wav"
    soundfile.write(path, np.zeros(0, dtype=np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match=r"empty\.wav.*no samples"):
        load_audio(path)


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00garbage that is not audio" * 10])
def test_corrupt_bytes_are_an_audio_error_naming_the_file(tmp_path, content):
    path = tmp_path / "broken.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=r"broken\.wav: cannot read audio"):
        load_audio(path)


def test_folder_is_not_audio(tmp_path):
    with pytest.raises(AudioError, match="not a file"):
        load_audio(tmp_path)


# --- mel filters and the Whisper front-end -----------------------------------------------------------------------


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filters_equal_transformers_slaney_filter_bank(n_mels):
    audio_utils = pytest.importorskip("transformers.audio_utils")
    reference = audio_utils.mel_filter_bank(
        num_frequency_bins=N_FFT // 2 + 1,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=SAMPLE_RATE / 2,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    )
    filters = mel_filters(n_mels)
    assert filters.shape == (n_mels, N_FFT // 2 + 1) and filters.dtype == np.float32
    np.testing.assert_allclose(filters, reference.T, rtol=0, atol=1e-7)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_thirty_seconds_equal_transformers_whisper_feature_extractor(n_mels):
    transformers = pytest.importorskip("transformers")
    audio = speech_like(30 * SAMPLE_RATE)
    extractor = transformers.WhisperFeatureExtractor(feature_size=n_mels)
    reference = extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]
    features, mask = LogMelSpectrogram(FrontEndConfig(n_mels=n_mels))(*pad_batch([audio]))
    assert features.shape == (1, n_mels, 3000) and bool(mask.all())
    np.testing.assert_allclose(features[0].numpy(), reference, rtol=0, atol=1e-4)


def test_short_clips_equal_whisper_definition_on_each_clip_alone():
    clips = [speech_like(n, seed=n) for n in (16000, 4321, 32000 + 77, 400)]
    features, mask = LogMelSpectrogram()(*pad_batch(clips))
    for row, clip in enumerate(clips):
        expected = whisper_log_mel(clip, 80)
        frames = len(clip) // HOP_LENGTH
        assert expected.shape[1] == frames and int(mask[row].sum()) == frames
        np.testing.assert_allclose(features[row, :, :frames].numpy(), expected, rtol=0, atol=1e-4)


def test_clip_alone_and_inside_a_padded_batch_give_the_same_features():
    frontend = LogMelSpectrogram()
    short = speech_like(5000, seed=1)
    alone, _ = frontend(*pad_batch([short]))
    batched, mask = frontend(*pad_batch([speech_like(48000, seed=2), short, speech_like(100, seed=3)]))
    frames = 5000 // HOP_LENGTH
    assert mask[1].tolist() == [True] * frames + [False] * (mask.shape[1] - frames)
    np.testing.assert_allclose(batched[1, :, :frames].numpy(), alone[0].numpy(), rtol=0, atol=1e-5)


def test_padded_frames_are_zero_and_the_loud_neighbour_does_not_set_the_clamp():
    quiet = 1e-3 * speech_like(8000, seed=4)
    loud = 100 * speech_like(16000, seed=5)
    features, mask = LogMelSpectrogram()(*pad_batch([quiet, loud]))
    assert float(features[0][:, ~mask[0]].abs().max()) == 0.0
    expected = whisper_log_mel(quiet, 80)
    np.testing.assert_allclose(features[0, :, : expected.shape[1]].numpy(), expected, rtol=0, atol=1e-4)


def test_frame_count_is_length_floor_divided_by_hop():
    lengths = [159, 160, 161, 16000, 16159]
    _, mask = LogMelSpectrogram()(*pad_batch([np.ones(n, dtype=np.float32) for n in lengths]))
    assert mask.sum(dim=1).tolist() == [n // HOP_LENGTH for n in lengths]


def test_128_mel_config_gives_128_bins():
    features, _ = LogMelSpectrogram(FrontEndConfig(n_mels=128))(*pad_batch([speech_like(1600)]))
    assert features.shape == (1, 128, 10)


def test_unsupported_mel_count_is_a_config_error():
    with pytest.raises(ConfigError, match="n_mels = 64"):
        FrontEndConfig(n_mels=64)


def test_pad_batch_zero_pads_and_reports_lengths():
    waveforms, lengths = pad_batch([np.ones(3, dtype=np.float32), np.ones(5, dtype=np.float32)])
    assert lengths.tolist() == [3, 5] and waveforms.dtype == torch.float32
    assert waveforms.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
