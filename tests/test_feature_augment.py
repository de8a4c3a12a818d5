import numpy as np
import torch

from quads.audio import LogMelSpectrogram
from quads.training.batches import Batch
from quads.training.feature_augment import frequency_warp, mel_band_centres, spec_augment


def _tone_batch(frequency: float, copies: int, seconds: float = 0.5) -> Batch:
    """Log-mels of a pure tone, the same clip `copies` times, in a batch padded to twice its length."""
    samples = int(16000 * seconds)
    wave = torch.tensor(np.sin(2 * np.pi * frequency * np.arange(samples) / 16000), dtype=torch.float32)
    waves = torch.stack([torch.cat([wave, torch.zeros(samples)])] * copies)
    features, mask = LogMelSpectrogram()(waves, torch.full((copies,), samples))
    return Batch(features, mask, torch.zeros(copies, dtype=torch.long), torch.arange(copies))


def test_the_band_centres_are_the_filterbank_peaks():
    from quads.audio import N_FFT, mel_filters

    peaks = np.fft.rfftfreq(N_FFT, 1 / 16000)[mel_filters(80).argmax(1)]
    centres = mel_band_centres(80)[0]
    assert np.all(np.abs(peaks - centres) <= 40.0)  # one FFT bin is 40 Hz


def test_a_warped_tone_sounds_like_the_tone_at_its_factor():
    """A tone at f, warped by a, has nearly the log-mel spectrum of the tone at a * f: the band of its peak."""
    batch = _tone_batch(1500.0, 8)
    factors = 1.0 + 0.1 * (2.0 * torch.rand(8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 1.0)
    warped = frequency_warp(batch, torch.Generator().manual_seed(0), 0.1)
    frames = int(batch.mask[0].sum())
    for row, factor in enumerate(factors.tolist()):
        spectrum = warped.inputs[row, :, :frames].mean(-1)
        truth = _tone_batch(1500.0 * factor, 1).inputs[0, :, :frames].mean(-1)
        assert abs(int(spectrum.argmax()) - int(truth.argmax())) <= 1
        assert (spectrum - truth).norm() < (batch.inputs[row, :, :frames].mean(-1) - truth).norm()
    assert len({round(f, 3) for f in factors.tolist()}) == 8  # each clip draws its own factor


def test_no_warp_is_the_identity_and_padding_stays_zero():
    batch = _tone_batch(800.0, 3)
    unchanged = frequency_warp(batch, torch.Generator().manual_seed(1), 0.0)
    torch.testing.assert_close(unchanged.inputs, batch.inputs)
    warped = frequency_warp(batch, torch.Generator().manual_seed(1), 0.2)
    assert torch.all(warped.inputs[~batch.mask[:, None, :].expand_as(batch.inputs)] == 0)
    assert warped.inputs.shape == batch.inputs.shape
    assert torch.equal(warped.mask, batch.mask) and torch.equal(warped.labels, batch.labels)


def test_augmentations_repeat_with_the_same_generator_seed():
    batch = _tone_batch(2000.0, 4)
    first = spec_augment(frequency_warp(batch, torch.Generator().manual_seed(5), 0.1), torch.Generator().manual_seed(5))
    again = spec_augment(frequency_warp(batch, torch.Generator().manual_seed(5), 0.1), torch.Generator().manual_seed(5))
    other = frequency_warp(batch, torch.Generator().manual_seed(6), 0.1)
    torch.testing.assert_close(first.inputs, again.inputs)
    assert not torch.allclose(other.inputs, frequency_warp(batch, torch.Generator().manual_seed(5), 0.1).inputs)
