"""Light acoustic augmentation of clean TTS audio: speed, silence jitter, gain and coloured noise.

TTS speech is unnaturally clean and tightly cut; without this a student learns the engines, not the words.
Every random draw comes from a generator seeded by (corpus seed, utterance name), so an utterance's audio is
the same whichever worker makes it, in whatever order, and a resumed run reproduces it exactly.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np
import soxr

from quads.errors import ConfigError

NOISE_COLOURS = ("white", "pink", "brown")
FRAME = 400     # 25 ms at 16 kHz, for measuring speech power


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges drawn uniformly per utterance; the defaults are a light level (speech stays clearly audible)."""

    snr_db: tuple[float, float] = (10.0, 30.0)
    noise_colours: tuple[str, ...] = NOISE_COLOURS
    gain_db: tuple[float, float] = (-6.0, 6.0)
    speed: tuple[float, float] = (0.9, 1.1)
    lead_silence_s: tuple[float, float] = (0.05, 0.4)
    trail_silence_s: tuple[float, float] = (0.05, 0.4)
    peak_limit: float = 0.99     # gain never pushes the peak above this (no clipping)

    def __post_init__(self) -> None:
        for name in ("snr_db", "gain_db", "speed", "lead_silence_s", "trail_silence_s"):
            low, high = getattr(self, name)
            if low > high:
                raise ConfigError(f"augment.{name}: low {low} is above high {high}")
        if self.speed[0] <= 0 or self.lead_silence_s[0] < 0 or self.trail_silence_s[0] < 0:
            raise ConfigError("augment: speed must be positive and silences non-negative")
        unknown = [colour for colour in self.noise_colours if colour not in NOISE_COLOURS]
        if unknown or not self.noise_colours:
            raise ConfigError(f"augment.noise_colours: {unknown or 'empty'}; choose from {', '.join(NOISE_COLOURS)}")

    def to_dict(self) -> dict[str, object]:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


def utterance_rng(seed: int, name: str) -> np.random.Generator:
    """A generator that depends only on the corpus seed and the utterance's name (not on Python's hash)."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def augment(audio: np.ndarray, config: AugmentConfig, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Speed-perturb, pad with silence, apply gain, then add noise at a random SNR over the whole clip."""
    speed = rng.uniform(*config.speed)
    if abs(speed - 1.0) > 1e-6:
        # Reading the samples as if recorded at speed * rate and resampling back changes tempo and pitch together.
        audio = soxr.resample(audio, sample_rate * speed, sample_rate, quality="HQ").astype(np.float32)
    lead = int(rng.uniform(*config.lead_silence_s) * sample_rate)
    trail = int(rng.uniform(*config.trail_silence_s) * sample_rate)
    audio = np.concatenate([np.zeros(lead, np.float32), audio, np.zeros(trail, np.float32)])
    gain = 10.0 ** (rng.uniform(*config.gain_db) / 20.0)
    peak = float(np.max(np.abs(audio))) or 1.0
    audio = audio * min(gain, config.peak_limit / peak)
    colour = config.noise_colours[int(rng.integers(len(config.noise_colours)))]
    snr_db = rng.uniform(*config.snr_db)
    noise = coloured_noise(colour, audio.size, rng)
    noise *= np.sqrt(speech_power(audio) / 10.0 ** (snr_db / 10.0))
    return np.clip(audio + noise, -1.0, 1.0).astype(np.float32)


def speech_power(audio: np.ndarray) -> float:
    """Mean power of the frames that carry speech (within 30 dB of the loudest), so padding does not count."""
    frames = audio[: audio.size // FRAME * FRAME].reshape(-1, FRAME) if audio.size >= FRAME else audio[None, :]
    power = np.mean(frames.astype(np.float64) ** 2, axis=1)
    loud = power[power >= power.max() * 1e-3]
    return float(loud.mean()) if loud.size else 0.0


def coloured_noise(colour: str, length: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise: white (flat), pink (1/f power) or brown (1/f^2 power), shaped in the frequency domain."""
    white = rng.standard_normal(length)
    if colour != "white" and length > 1:
        spectrum = np.fft.rfft(white)
        frequency = np.arange(spectrum.size, dtype=np.float64)
        frequency[0] = 1.0
        spectrum /= frequency ** (0.5 if colour == "pink" else 1.0)
        white = np.fft.irfft(spectrum, n=length)
    white -= white.mean()
    return (white / (np.sqrt(np.mean(white ** 2)) or 1.0)).astype(np.float32)
