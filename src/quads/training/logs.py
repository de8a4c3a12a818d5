"""The training record: metrics.csv (the record) and TensorBoard scalars when it is installed."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from quads.atomic import atomic_write_text


def write_metrics_csv(path: Path, history: list[dict[str, float]]) -> None:
    keys: list[str] = []
    for row in history:
        keys += [key for key in row if key not in keys]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, text.getvalue())


class TensorBoardLog:
    """Scalars to TensorBoard when it is installed; silently nothing otherwise (CSV is the record)."""

    def __init__(self, directory: Path | None):
        self.writer = None
        if directory is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self.writer = SummaryWriter(str(directory))

    def add(self, row: dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key not in ("epoch", "stage_index") and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
