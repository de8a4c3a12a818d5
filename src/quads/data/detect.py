"""`open_corpus`: one entry point that recognises the corpus format from what is on disk."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quads.data.corpus import Corpus
from quads.data.fsc import fsc_split_file, load_fsc
from quads.data.manifest import load_manifest
from quads.data.slurp import SLURP_SPLIT_FILES, load_slurp
from quads.errors import ConfigError, DataError


def open_corpus(path: str | Path, **options: Any) -> Corpus:
    """FSC (a folder with data/train_data.csv), SLURP (a folder with train/devel/test .jsonl, or one of those files)
    or a manifest (a .csv file). `options` go to the matching loader (e.g. skip_missing=True, recordings="both")."""
    path = Path(path).expanduser()
    loader, root = detect_corpus(path)
    accepted = inspect.signature(loader).parameters
    unknown = sorted(name for name in options if name not in accepted or name == next(iter(accepted)))
    if unknown:
        allowed = list(accepted)[1:]
        raise ConfigError(f"option(s) {unknown} do not apply to {loader.__name__}; it accepts {allowed}")
    return loader(root, **options)


def detect_corpus(path: Path) -> tuple[Callable[..., Corpus], Path]:
    if path.is_file() and path.suffix.lower() == ".csv":
        return load_manifest, path
    if path.is_file() and path.suffix.lower() == ".jsonl":
        return load_slurp, path.parent
    if path.is_dir():
        if fsc_split_file(path, "train").is_file():
            return load_fsc, path
        if path.name == "data" and (path / "train_data.csv").is_file():
            return load_fsc, path.parent
        if any((path / name).is_file() for name in SLURP_SPLIT_FILES.values()):
            return load_slurp, path
        raise DataError(
            f"{path}: not a recognised corpus: expected data/train_data.csv (Fluent Speech Commands layout), "
            "train/devel/test.jsonl (SLURP), or pass a manifest .csv file"
        )
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    raise DataError(f"{path}: not a corpus: pass a corpus folder or a manifest .csv file")
