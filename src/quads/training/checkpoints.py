"""Checkpoints and the trained student on disk: written atomically, read back as tensors and plain values
only (weights_only=True), never as arbitrary pickles."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from quads.atomic import atomic_write
from quads.errors import ConfigError, QuadsError

CHECKPOINT_VERSION = 1
STUDENT_FILE = "student.pt"  # the final student of a `quads compress` run folder


class CheckpointMismatch(ConfigError):
    """A checkpoint written by a different configuration than the one being resumed."""


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """torch.save to a temporary file, then rename: a full disk or a kill keeps the previous checkpoint."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    try:
        atomic_write(path, lambda file: file.write(buffer.getbuffer()))
    except OSError as error:
        raise QuadsError(f"could not write checkpoint {path}: {error.strerror or error}; "
                         "the previous checkpoint is kept") from error


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely: tensors and plain values only (weights_only=True), never arbitrary pickles."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise QuadsError(f"cannot read checkpoint {path}: {error}") from None


def load_student(run_dir: str | Path) -> dict[str, Any]:
    """The final student of a run folder (tensors and plain values only; loaded with weights_only=True)."""
    path = Path(run_dir) / STUDENT_FILE
    if not path.exists():
        raise QuadsError(f"{run_dir}: no {STUDENT_FILE}; is this a finished `quads compress` run folder?")
    student = load_checkpoint(path)
    if not isinstance(student, dict) or student.get("format") != "quads-student":
        raise QuadsError(f"{path}: not a quads student file")
    return student
