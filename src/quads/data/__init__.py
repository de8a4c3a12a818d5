"""Corpora: the utterances of Fluent Speech Commands, SLURP or a CSV manifest, split and labelled the same way."""

from quads.data.corpus import SPLITS, Corpus, DataWarning, LabelMap, Utterance
from quads.data.detect import open_corpus
from quads.data.fsc import load_fsc
from quads.data.manifest import load_manifest
from quads.data.slurp import load_slurp, read_slurp_records

__all__ = [
    "SPLITS",
    "Corpus",
    "DataWarning",
    "LabelMap",
    "Utterance",
    "load_fsc",
    "load_manifest",
    "load_slurp",
    "open_corpus",
    "read_slurp_records",
]
