"""Where quads keeps what it computes once per machine: features, teacher outputs, synthetic corpora."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from quads.config import DataConfig


def cache_root(data: DataConfig | None = None) -> Path:
    """Root of every quads cache: data.cache_dir, else $QUADS_CACHE_DIR, else ~/.cache/quads."""
    if data is not None and data.cache_dir:
        return Path(data.cache_dir).expanduser()
    root = os.environ.get("QUADS_CACHE_DIR")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "quads"
