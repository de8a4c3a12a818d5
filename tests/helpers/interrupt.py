"""Simulate a training process killed right after an epoch's checkpoint."""

from __future__ import annotations

import quads.training.loop as loop


def interrupt_after_epoch(monkeypatch, epochs: int):
    """Make fit() raise KeyboardInterrupt right after epoch `epochs` is saved; returns the real metrics writer,
    for tests that put it back before resuming."""
    real_write = loop.write_metrics_csv

    def killed(path, history):
        real_write(path, history)
        if len(history) == epochs:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "write_metrics_csv", killed)
    return real_write
