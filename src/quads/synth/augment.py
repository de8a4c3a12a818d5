"""Acoustic augmentation of clean TTS audio: speed, silence jitter, room reverberation, gain, coloured noise and
a microphone's band limits.

TTS speech is unnaturally clean, full-band and tightly cut; real recordings are made in rooms, through
microphones and phone codecs that cut the low and high bands (FSDD is recorded at 8 kHz). Without this a
student learns the engines, not the words.
Every random draw comes from a generator seeded by (corpus seed, utterance name), so an utterance's audio is
the same whichever worker makes it, in whatever order, and a resumed run reproduces it exactly.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np
import soxr
from scipy import signal

from quads.errors import ConfigError

NOISE_COLOURS = ("white", "pink", "brown")
FRAME = 400     # 25 ms at 16 kHz, for measuring speech power
LN_1000 = 6.907755  # a 60 dB fall in amplitude is a factor of 1000: exp(-ln(1000) t / RT60)
FIRST_REFLECTION_S = 0.0025  # the room's first reflections arrive a few ms after the direct sound
ROOM_KEYS = ("reverb_probability", "rt60_s", "direct_to_reverb_db")
MIC_KEYS = ("band_probability", "highpass_hz", "lowpass_hz")


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
    # A synthetic room (exponentially decaying noise tail after the direct sound) on this share of utterances.
    reverb_probability: float = 0.5
    rt60_s: tuple[float, float] = (0.15, 0.6)          # reverberation time: small room to living room
    direct_to_reverb_db: tuple[float, float] = (0.0, 15.0)
    # A microphone / phone channel (4th-order Butterworth band-pass) on this share of utterances.
    band_probability: float = 0.5
    highpass_hz: tuple[float, float] = (50.0, 300.0)
    lowpass_hz: tuple[float, float] = (3400.0, 7500.0)  # 3.4 kHz: narrow-band telephony; below 8 kHz Nyquist

    def __post_init__(self) -> None:
        for name in ("snr_db", "gain_db", "speed", "lead_silence_s", "trail_silence_s", "rt60_s",
                     "direct_to_reverb_db", "highpass_hz", "lowpass_hz"):
            low, high = getattr(self, name)
            if low > high:
                raise ConfigError(f"augment.{name}: low {low} is above high {high}")
        if self.speed[0] <= 0 or self.lead_silence_s[0] < 0 or self.trail_silence_s[0] < 0:
            raise ConfigError("augment: speed must be positive and silences non-negative")
        for name in ("reverb_probability", "band_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"augment.{name}: {getattr(self, name)} is not a probability in [0, 1]")
        if self.rt60_s[0] <= 0 or self.highpass_hz[0] <= 0 or self.highpass_hz[1] >= self.lowpass_hz[0]:
            raise ConfigError("augment: rt60_s must be positive and every highpass_hz below every lowpass_hz")
        unknown = [colour for colour in self.noise_colours if colour not in NOISE_COLOURS]
        if unknown or not self.noise_colours:
            raise ConfigError(f"augment.noise_colours: {unknown or 'empty'}; choose from {', '.join(NOISE_COLOURS)}")

    def to_dict(self) -> dict[str, object]:
        """The settings, for a corpus's fingerprint. An unused room or microphone is left out, so corpora made
        before they existed keep their fingerprint: their audio is the same, sample for sample."""
        unused = {*(() if self.reverb_probability else ROOM_KEYS), *(() if self.band_probability else MIC_KEYS)}
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()
                if key not in unused}


LIGHT_AUGMENT = AugmentConfig(reverb_probability=0.0, band_probability=0.0)  # no room, no microphone (corpora v1/v2)
AUGMENT_LEVELS: dict[str, AugmentConfig | None] = {"room": AugmentConfig(), "light": LIGHT_AUGMENT, "none": None}


def utterance_rng(seed: int, name: str) -> np.random.Generator:
    """A generator that depends only on the corpus seed and the utterance's name (not on Python's hash)."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def augment(audio: np.ndarray, config: AugmentConfig, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Speed-perturb, pad with silence, apply gain, maybe reverberate in a room, add noise at a random SNR over
    the whole clip, then maybe pass it all through a band-limited microphone channel."""
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
    # The room and microphone draw last and always (used or not): with both probabilities 0 the clip is the
    # same, sample for sample, as before they existed, and one setting never shifts another's draws.
    reverberate = rng.uniform() < config.reverb_probability
    rt60, drr_db = rng.uniform(*config.rt60_s), rng.uniform(*config.direct_to_reverb_db)
    band_limit = rng.uniform() < config.band_probability
    low, high = rng.uniform(*config.highpass_hz), rng.uniform(*config.lowpass_hz)
    if reverberate:
        response = room_impulse_response(rt60, drr_db, sample_rate, rng)
        audio = signal.fftconvolve(audio, response)[: audio.size].astype(np.float32)  # tail rings into the pad
    noise *= np.sqrt(speech_power(audio) / 10.0 ** (snr_db / 10.0))
    audio = audio + noise
    if band_limit:
        audio = band_pass(audio, low, min(high, 0.45 * sample_rate), sample_rate)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def room_impulse_response(rt60_s: float, direct_to_reverb_db: float, sample_rate: int,
                          rng: np.random.Generator) -> np.ndarray:
    """A unit direct sound followed by a diffuse tail: Gaussian noise decaying 60 dB over `rt60_s`, its energy
    `direct_to_reverb_db` below the direct sound's (the statistical room model of Schroeder / Polack)."""
    length = max(2, int(rt60_s * sample_rate))
    time = np.arange(length) / sample_rate
    tail = rng.standard_normal(length) * np.exp(-LN_1000 * time / rt60_s)
    tail[: max(1, int(FIRST_REFLECTION_S * sample_rate))] = 0.0
    tail *= np.sqrt(10.0 ** (-direct_to_reverb_db / 10.0) / max(float(np.sum(tail ** 2)), 1e-12))
    tail[0] = 1.0
    return tail.astype(np.float32)


def band_pass(audio: np.ndarray, low_hz: float, high_hz: float, sample_rate: int) -> np.ndarray:
    """A microphone or phone channel: 4th-order Butterworth band-pass, applied forwards (causal, like a mic)."""
    sections = signal.butter(4, [low_hz, high_hz], btype="bandpass", fs=sample_rate, output="sos")
    return signal.sosfilt(sections, audio).astype(np.float32)


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
