"""quads: distil a large speech teacher into a tiny intent classifier and quantize it with k-means codebooks."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from pathlib import Path

    from quads.runtime.model import PackedModel


def load(path: str | Path) -> PackedModel:
    """Load a packed model file (from `quads export`) as a ready module; see `quads.runtime.model.load`."""
    from quads.runtime.model import load as load_packed_model

    return load_packed_model(path)


__all__ = ["__version__", "load"]
