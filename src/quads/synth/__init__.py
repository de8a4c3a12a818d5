"""Synthetic spoken corpora made offline with espeak-ng and flite, written in the Fluent Speech Commands layout.

    from quads.synth import synthesize_corpus
    report = synthesize_corpus("corpora/commands", seed=0, train_utterances_per_intent=4)  # the built-in corpus
    print(report.summary())
"""

from quads.synth.augment import AugmentConfig
from quads.synth.corpus import SynthReport, synthesize_corpus, synthesize_slurp_corpus
from quads.synth.grammar import Phrase, PhraseTable, builtin_phrase_table, load_phrase_table
from quads.synth.tts import SynthesisError
from quads.synth.voices import Speaker, make_speakers, split_speakers

__all__ = [
    "AugmentConfig",
    "Phrase",
    "PhraseTable",
    "Speaker",
    "SynthReport",
    "SynthesisError",
    "builtin_phrase_table",
    "load_phrase_table",
    "make_speakers",
    "split_speakers",
    "synthesize_corpus",
    "synthesize_slurp_corpus",
]
