"""Offline text-to-speech: one phrase, one speaker, in; 16 kHz mono float32 audio out.

espeak-ng streams a WAV on stdout; flite must write a file, so it gets a private temporary one; piper and Kokoro
voices run in-process (`quads.synth.piper`, `quads.synth.kokoro`), with espeak-ng as their phonemiser. All four
are deterministic (same text and settings give the same audio), which makes the corpus reproducible.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import soundfile
import soxr

from quads.audio import SAMPLE_RATE
from quads.errors import QuadsError
from quads.synth import kokoro
from quads.synth.piper import load_voice, package_versions, with_sentence_end
from quads.synth.voices import ESPEAK, FLITE, KOKORO, KOKORO_VOICES, NEURAL_ENGINES, PIPER, PIPER_VOICES, Speaker

INSTALL_HINT = "install them with: apt-get install -y espeak-ng flite"
TTS_TIMEOUT_S = 60
SILENCE_PEAK = 1e-4     # a waveform whose peak stays below this carries no speech


class SynthesisError(QuadsError):
    """A TTS engine is missing, failed, or produced no audio for a phrase."""


def find_engines(engines: Iterable[str]) -> dict[str, str]:
    """The path of each engine's binary (piper's and Kokoro's: espeak-ng, their phonemiser); a clear error with
    the install command when one is missing."""
    paths = {engine: shutil.which(ESPEAK if engine in NEURAL_ENGINES else engine) for engine in sorted(set(engines))}
    missing = [engine for engine, path in paths.items() if path is None]
    if missing:
        raise SynthesisError(f"text-to-speech program not found on PATH: {', '.join(missing)}; {INSTALL_HINT}")
    return {engine: str(path) for engine, path in paths.items()}


def engine_versions(binaries: dict[str, str]) -> dict[str, str]:
    """The version line of `--version` of each engine, recorded in synth.json (output may differ across versions)."""
    versions = {}
    for engine, binary in binaries.items():
        if engine == PIPER:
            versions[engine] = package_versions(sorted(PIPER_VOICES.values()))
            continue
        if engine == KOKORO:
            versions[engine] = package_versions([kokoro.PACKAGE])
            continue
        try:
            result = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=TTS_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise SynthesisError(f"{engine} ({binary}) cannot be run: {error}; {INSTALL_HINT}") from None
        lines = [line.strip() for line in (result.stdout or result.stderr).splitlines() if line.strip()]
        versioned = [line for line in lines if "version" in line.lower() or engine in line.lower()]
        versions[engine] = (versioned or lines or ["unknown"])[0].split("Data at:")[0].strip()
    return versions


def speak(text: str, speaker: Speaker, binary: str) -> np.ndarray:
    """Synthesise `text` with `speaker`'s setting; float32 mono at 16 kHz in [-1, 1]."""
    if speaker.engine == ESPEAK:
        audio, rate = _speak_espeak(text, speaker, binary)
    elif speaker.engine == FLITE:
        audio, rate = _speak_flite(text, speaker, binary)
    elif speaker.engine == PIPER:
        audio, rate = _speak_piper(text, speaker, binary)
    elif speaker.engine == KOKORO:
        audio, rate = _speak_kokoro(text, speaker, binary)
    else:
        raise SynthesisError(f"speaker {speaker.speaker_id}: unknown TTS engine {speaker.engine!r}")
    if audio.size == 0 or float(np.max(np.abs(audio))) < SILENCE_PEAK:
        raise SynthesisError(f"{speaker.engine} produced no audio for {text!r} (speaker {speaker.speaker_id})")
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ")
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def _speak_espeak(text: str, speaker: Speaker, binary: str) -> tuple[np.ndarray, int]:
    command = [binary, "-v", f"{speaker.voice}+{speaker.variant}" if speaker.variant else speaker.voice,
               "-s", str(int(speaker.rate)), "-p", str(int(speaker.pitch)), "--stdout"]
    stdout = _run(command, text, speaker, stdin_text=_plain_text(text, ascii_only=False))
    return _decode_wav(stdout, text, speaker)


def _speak_flite(text: str, speaker: Speaker, binary: str) -> tuple[np.ndarray, int]:
    with tempfile.TemporaryDirectory(prefix="quads-flite-") as folder:
        wav_path = Path(folder) / "speech.wav"
        command = [binary, "-voice", speaker.voice,
                   "--setf", f"duration_stretch={speaker.rate:g}", "--setf", f"int_f0_target_mean={speaker.pitch:g}",
                   "-t", _plain_text(text, ascii_only=True), "-o", str(wav_path)]
        _run(command, text, speaker)
        if not wav_path.exists():
            raise SynthesisError(f"flite wrote no audio for {text!r} (speaker {speaker.speaker_id})")
        return _decode_wav(wav_path.read_bytes(), text, speaker)


def _speak_piper(text: str, speaker: Speaker, espeak_binary: str) -> tuple[np.ndarray, float]:
    """Phonemes from espeak-ng, audio from the voice; pitch factor f: the clip declared f times faster."""
    if speaker.voice not in PIPER_VOICES:
        raise SynthesisError(f"speaker {speaker.speaker_id}: unknown piper voice {speaker.voice!r}; known: "
                             f"{', '.join(sorted(PIPER_VOICES))}")
    voice = load_voice(speaker.voice, PIPER_VOICES[speaker.voice])
    plain = _plain_text(text, ascii_only=False)
    ipa = _run([espeak_binary, "-q", "--ipa", "-v", voice.espeak_voice], text, speaker, stdin_text=plain)
    phonemes = with_sentence_end(ipa.decode("utf-8", "replace"), plain)
    audio = voice.synthesize(phonemes, length_scale=speaker.rate)
    return audio, voice.sample_rate * speaker.pitch


def _speak_kokoro(text: str, speaker: Speaker, espeak_binary: str) -> tuple[np.ndarray, float]:
    """Phonemes from espeak-ng (en-us) in Kokoro's symbols, audio from the model; pitch factor as piper's."""
    if speaker.voice not in KOKORO_VOICES:
        raise SynthesisError(f"speaker {speaker.speaker_id}: unknown Kokoro voice {speaker.voice!r}; known: "
                             f"{', '.join(KOKORO_VOICES)}")
    model = kokoro.load_model()
    plain = _plain_text(text, ascii_only=False)
    ipa = _run([espeak_binary, "-q", "--ipa", "-v", "en-us"], text, speaker, stdin_text=plain)
    phonemes = with_sentence_end(kokoro.kokoro_phonemes(ipa.decode("utf-8", "replace")), plain)
    audio = model.synthesize(phonemes, speaker.voice, speed=speaker.rate)
    return audio, kokoro.SAMPLE_RATE * speaker.pitch


def _run(command: list[str], text: str, speaker: Speaker, stdin_text: str | None = None) -> bytes:
    try:
        result = subprocess.run(command, input=stdin_text.encode("utf-8") if stdin_text is not None else None,
                                capture_output=True, timeout=TTS_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise SynthesisError(f"{command[0]} not found; {INSTALL_HINT}") from None
    except subprocess.TimeoutExpired:
        raise SynthesisError(f"{speaker.engine} took over {TTS_TIMEOUT_S} s on {text!r} "
                             f"(speaker {speaker.speaker_id})") from None
    if result.returncode != 0:
        detail = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise SynthesisError(f"{speaker.engine} failed (exit {result.returncode}) on {text!r} "
                             f"(speaker {speaker.speaker_id}): {detail[-1] if detail else 'no message'}")
    return result.stdout


def _decode_wav(data: bytes, text: str, speaker: Speaker) -> tuple[np.ndarray, int]:
    if not data:
        raise SynthesisError(f"{speaker.engine} produced no audio for {text!r} (speaker {speaker.speaker_id})")
    try:
        audio, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as error:
        raise SynthesisError(f"{speaker.engine} returned unreadable audio for {text!r} "
                             f"(speaker {speaker.speaker_id}): {error}") from None
    return audio.mean(axis=1), int(rate)


def _plain_text(text: str, ascii_only: bool) -> str:
    """What the engine reads: typographic quotes made plain (FSC has `’`); flite reads bytes, so ASCII only."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    text = " ".join(text.split())
    if ascii_only:
        text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return text
