"""Fuzzed model files with valid checksums: `quads.load` refuses each with a ModelFileError or loads it, never a
traceback (issue 11). `bench/bench_fuzz_load.py` runs the same generator 10,000+ times."""

from __future__ import annotations

import time
import warnings
from collections import Counter

from tests.helpers.fuzz import fuzzed_files, load_outcome
from tests.helpers.model_files import tiny_model_parts

MUTATIONS = 300


def test_hundreds_of_seeded_mutations_end_in_a_model_file_error_or_a_load(tmp_path):
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parts = tiny_model_parts()
    outcomes = Counter()
    bugs = []
    for path in fuzzed_files(parts, tmp_path, MUTATIONS, seed=11):
        outcome = load_outcome(path)
        outcomes[outcome if outcome in ("loaded", "refused") else "bug"] += 1
        if outcome not in ("loaded", "refused"):
            bugs.append(outcome)
    assert not bugs, f"{len(bugs)} of {MUTATIONS} loads ended in a non-quads exception, e.g. {bugs[:3]}"
    assert outcomes["refused"] > MUTATIONS // 2  # the mutations do reach the checks
    assert time.perf_counter() - started < 30
