"""`quads predict FILE WAV...`: print the intent a packed model hears in each audio file."""

from __future__ import annotations

import argparse
from pathlib import Path

from quads.runtime.model import load


def at_least_one(text: str) -> int:
    """An argparse type: a whole number >= 1 (showing the best 0 intents would print nothing)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="packed model file from `quads export`")
    parser.add_argument("audio", type=Path, nargs="+", help="WAV or FLAC files")
    parser.add_argument("--top", type=at_least_one, default=1, help="show the best N intents per file")


def run(args: argparse.Namespace) -> int:
    model = load(args.model)
    for path in args.audio:
        (prediction,) = model.predict_files([path], top_k=args.top)
        shown = "  ".join(f"{label} ({probability:.3f})" for label, probability in prediction.top[: args.top])
        print(f"{path}\t{shown}")
    return 0
