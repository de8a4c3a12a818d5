"""Atomic file writes: a reader (or a crash) never sees a half-written checkpoint, CSV or model file.

Write to a temporary file in the target's folder, flush it to disk, then `os.replace` it over the target.
If writing fails (disk full, killed process) the previous file survives and the temporary one is removed.
The file gets the mode a plain `open(target, "w")` would give it (0666 less the umask, typically 0644), not
the 0600 of the temporary file, so another user or a web server can read an exported model.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO


def _umask() -> int:
    """The process umask. Linux exposes it read-only in /proc; elsewhere set-and-restore is the only way (it is
    briefly 0o077, the strictest, so a file created by another thread meanwhile is never too open)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | Path, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it replaces `target`, on error it is deleted.

    `durable` flushes the file to disk before the rename (checkpoints, model files); caches, whose entries are
    recomputed when lost, skip that cost.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    temp = Path(temp_name)
    try:
        yield temp
        if durable:
            with open(temp, "rb+") as written:
                os.fsync(written.fileno())
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def atomic_write(target: str | Path, write: Callable[[IO[bytes]], object], *, durable: bool = True) -> None:
    """Call `write(file)` on a temporary binary file that atomically becomes `target`."""
    with atomic_path(target, durable=durable) as temp, open(temp, "wb") as file:
        write(file)


def atomic_write_bytes(target: str | Path, data: bytes, *, durable: bool = True) -> None:
    atomic_write(target, lambda file: file.write(data), durable=durable)


def atomic_write_text(target: str | Path, text: str, *, durable: bool = True) -> None:
    atomic_write_bytes(target, text.encode("utf-8"), durable=durable)
