"""Audio I/O and the Whisper-compatible log-mel front-end.

Every model in quads hears the same features: Whisper's log-mel spectrogram (STFT with a periodic Hann window of
400 samples, hop 160, power spectrum, Slaney mel filters, log10, an 8-decade dynamic-range clamp, (x + 4) / 4).
Unlike Whisper, which pads every clip to 30 s, `LogMelSpectrogram` takes a batch of clips of different lengths and
returns a padding mask, so short commands cost short compute.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile
import soxr
import torch
from torch import Tensor, nn

from quads.errors import AudioError, ConfigError

SAMPLE_RATE = 16000  # Hz: what Whisper and every quads model hear
N_FFT = 400  # 25 ms analysis window
HOP_LENGTH = 160  # 10 ms between frames: 100 frames per second
SUPPORTED_N_MELS = (80, 128)  # Whisper v1/v2 use 80 mel bins, large-v3 uses 128
LOG_MEL_OFFSET = 4.0  # Whisper's normalisation: features = (log10 mel power + LOG_MEL_OFFSET) / LOG_MEL_SCALE
LOG_MEL_SCALE = 4.0
LONG_CLIP_SECONDS = 30.0  # Whisper's window; quads models are trained on commands of a few seconds


class AudioWarning(UserWarning):
    """Audio a model can hear but whose result may mislead: a low sample rate, a clip far longer than training's."""


def check_min_samples(waveform: np.ndarray, path: str | Path, min_samples: int, sample_rate: int) -> None:
    """Refuse a clip shorter than one feature frame (10 ms): no model can hear anything in it."""
    if len(waveform) < min_samples:
        raise AudioError(f"{path}: only {len(waveform)} samples ({1000 * len(waveform) / sample_rate:.1f} ms) of "
                         f"audio; at least {min_samples} samples ({1000 * min_samples / sample_rate:.0f} ms at "
                         f"{sample_rate} Hz) are needed")


def warn_if_misleading(path: str | Path, file_rate: int, num_samples: int, sample_rate: int = SAMPLE_RATE) -> None:
    """Warn when a prediction may mislead: speech recorded below the model's rate (upsampling cannot restore the
    missing band), or a clip much longer than the short commands models are trained on (one intent per file)."""
    if file_rate < sample_rate:
        warnings.warn(f"{path}: recorded at {file_rate} Hz, below the {sample_rate} Hz the model was trained on; "
                      "it is upsampled, but the missing high band can change the prediction", AudioWarning,
                      stacklevel=2)
    seconds = num_samples / sample_rate
    if seconds > LONG_CLIP_SECONDS:
        warnings.warn(f"{path}: {seconds:.0f} s long, far longer than the short commands the model was trained on "
                      f"(> {LONG_CLIP_SECONDS:.0f} s); it answers one intent for the whole file: cut it into "
                      "commands", AudioWarning, stacklevel=2)


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE, *, allow_resample: bool = True) -> np.ndarray:
    """Read an audio file (anything soundfile reads: WAV, FLAC, ...) as float32 mono at `sample_rate`.

    Multichannel audio is down-mixed by averaging the channels; a file at another rate is resampled with soxr
    (high quality), unless `allow_resample` is False, when the mismatch is an error rather than a silent cost.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: audio file not found")
    if not path.is_file():
        raise AudioError(f"{path}: not a file (expected an audio file such as WAV or FLAC)")
    try:
        samples, file_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, RuntimeError, OSError, ValueError, TypeError) as error:
        reason = str(error).strip() or type(error).__name__
        raise AudioError(f"{path}: cannot read audio ({reason}); expected a WAV or FLAC file") from error
    if samples.shape[0] == 0:
        raise AudioError(f"{path}: audio file contains no samples")
    waveform = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    if not np.isfinite(waveform).all():
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    if file_rate != sample_rate:
        if not allow_resample:
            raise AudioError(
                f"{path}: sample rate is {file_rate} Hz but {sample_rate} Hz is required (resampling is disabled)"
            )
        waveform = soxr.resample(waveform, file_rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(waveform, dtype=np.float32)


def audio_duration(path: str | Path) -> float:
    """Duration in seconds read from the file header only: cheap enough to sort thousands of files by length."""
    try:
        info = soundfile.info(str(path))
    except (soundfile.SoundFileError, RuntimeError, OSError, ValueError, TypeError) as error:
        raise AudioError(f"{path}: cannot read audio header ({error})") from error
    return info.frames / info.samplerate


def audio_sample_rate(path: str | Path) -> int:
    """The file's own sample rate, from its header."""
    try:
        return int(soundfile.info(str(path)).samplerate)
    except (soundfile.SoundFileError, RuntimeError, OSError, ValueError, TypeError) as error:
        raise AudioError(f"{path}: cannot read audio header ({error})") from error


def pad_batch(waveforms: Sequence[np.ndarray | Tensor]) -> tuple[Tensor, Tensor]:
    """Stack 1-D waveforms of different lengths into a zero-padded [B, S] float32 tensor and their [B] lengths."""
    tensors = [torch.as_tensor(np.asarray(w, dtype=np.float32) if not isinstance(w, Tensor) else w) for w in waveforms]
    for index, tensor in enumerate(tensors):
        if tensor.ndim != 1:
            raise ValueError(f"pad_batch expects 1-D waveforms; item {index} has shape {tuple(tensor.shape)}")
    lengths = torch.tensor([t.shape[0] for t in tensors], dtype=torch.long)
    batch = torch.zeros(len(tensors), int(lengths.max()) if tensors else 0, dtype=torch.float32)
    for row, tensor in enumerate(tensors):
        batch[row, : tensor.shape[0]] = tensor.to(torch.float32)
    return batch, lengths


@dataclass(frozen=True)
class FrontEndConfig:
    """Everything that determines the features; its JSON is part of the feature-cache key."""

    n_mels: int = 80
    sample_rate: int = SAMPLE_RATE
    n_fft: int = N_FFT
    hop_length: int = HOP_LENGTH

    def __post_init__(self) -> None:
        if self.n_mels not in SUPPORTED_N_MELS:
            raise ConfigError(f"n_mels = {self.n_mels} is not supported; Whisper uses one of {SUPPORTED_N_MELS}")
        for key in ("sample_rate", "n_fft", "hop_length"):
            if int(getattr(self, key)) <= 0:
                raise ConfigError(f"{key} must be a positive integer, got {getattr(self, key)}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def hz_to_slaney_mel(frequencies: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    frequencies = np.asarray(frequencies, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, log_step = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    mels = frequencies / f_sp
    high = frequencies >= min_log_hz
    mels[high] = min_log_mel + np.log(frequencies[high] / min_log_hz) / log_step
    return mels


def slaney_mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, log_step = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    frequencies = mels * f_sp
    high = mels >= min_log_mel
    frequencies[high] = min_log_hz * np.exp(log_step * (mels[high] - min_log_mel))
    return frequencies


def mel_band_edges(n_mels: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The n_mels + 2 frequencies (Hz) where the Slaney filters start, peak and end: evenly spaced in mel from 0
    to sr/2; filter i rises from edge i, peaks at edge i + 1 and falls to edge i + 2."""
    mel_min, mel_max = hz_to_slaney_mel(np.array([0.0, sample_rate / 2.0]))
    return slaney_mel_to_hz(np.linspace(mel_min, mel_max, n_mels + 2))


@lru_cache(maxsize=8)
def mel_filters(n_mels: int, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """The [n_mels, n_fft // 2 + 1] filterbank Whisper ships in mel_filters.npz, i.e.
    librosa.filters.mel(sr, n_fft, n_mels) with fmin 0, fmax sr/2, Slaney scale and Slaney area normalisation."""
    fft_frequencies = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    band_edges = mel_band_edges(n_mels, sample_rate)
    widths = np.diff(band_edges)
    ramps = band_edges[:, None] - fft_frequencies[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (band_edges[2:] - band_edges[:-2]))[:, None]  # equal area per filter
    weights = weights.astype(np.float32)
    weights.setflags(write=False)
    return weights


def frame_counts(lengths: Tensor, hop_length: int = HOP_LENGTH) -> Tensor:
    """Frames per clip: Whisper keeps lengths // hop of the 1 + lengths // hop centred STFT frames."""
    return torch.div(lengths, hop_length, rounding_mode="floor")


def log10_mel_power(features: Tensor) -> Tensor:
    """Undo Whisper's normalisation of `LogMelSpectrogram` features: log10 mel power (clamped 8 decades under
    the clip's peak)."""
    return features * LOG_MEL_SCALE - LOG_MEL_OFFSET


class LogMelSpectrogram(nn.Module):
    """Whisper's normalised log-mel spectrogram on a padded batch; each clip is processed as if it were alone."""

    def __init__(self, config: FrontEndConfig | None = None) -> None:
        super().__init__()
        self.config = config or FrontEndConfig()
        self.register_buffer("window", torch.hann_window(self.config.n_fft, periodic=True), persistent=False)
        filters = mel_filters(self.config.n_mels, self.config.sample_rate, self.config.n_fft)
        self.register_buffer("filters", torch.from_numpy(filters.copy()), persistent=False)

    def forward(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """waveforms [B, S] (zero-padded), lengths [B] -> features [B, n_mels, T] (0 on padded frames), mask [B, T]."""
        if waveforms.ndim != 2 or lengths.ndim != 1 or lengths.shape[0] != waveforms.shape[0]:
            raise ValueError(
                f"expected waveforms [B, S] and lengths [B], got {tuple(waveforms.shape)} and {tuple(lengths.shape)}"
            )
        lengths = lengths.to(device=waveforms.device, dtype=torch.long)
        if bool((lengths < 0).any()) or bool((lengths > waveforms.shape[1]).any()):
            raise ValueError(f"lengths must lie in [0, {waveforms.shape[1]}], got {lengths.tolist()}")
        n_fft, hop = self.config.n_fft, self.config.hop_length
        frames = frame_counts(lengths, hop)
        num_frames = int(frames.max()) if frames.numel() else 0
        mask = torch.arange(num_frames, device=waveforms.device)[None, :] < frames[:, None]
        if num_frames == 0:
            return waveforms.new_zeros(waveforms.shape[0], self.config.n_mels, 0), mask

        # Centre each clip with reflect padding computed from its *own* end (as torch.stft(center=True) would on
        # the clip alone), so the zero padding of the batch never leaks into a clip's last frames.
        span = (num_frames - 1) * hop + n_fft
        positions = torch.arange(span, device=waveforms.device)[None, :] - n_fft // 2
        period = (2 * (lengths - 1)).clamp(min=1)[:, None]
        folded = torch.remainder(positions.abs(), period)
        indices = torch.where(folded >= lengths[:, None], period - folded, folded).clamp(min=0)
        centred = torch.gather(waveforms.float(), 1, indices)

        spectrum = torch.stft(centred, n_fft, hop, window=self.window, center=False, return_complex=True)
        power = spectrum[..., :num_frames].abs() ** 2
        log_mel = torch.clamp(self.filters @ power, min=1e-10).log10()

        real = mask[:, None, :]
        peak = log_mel.masked_fill(~real, float("-inf")).amax(dim=(1, 2), keepdim=True)
        log_mel = torch.maximum(log_mel, peak - 8.0)
        features = ((log_mel + LOG_MEL_OFFSET) / LOG_MEL_SCALE).masked_fill(~real, 0.0)
        return features, mask
