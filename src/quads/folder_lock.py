"""One writer per folder: an advisory lock held for a whole run, so two processes never mix their outputs.

`quads compress`, `pretune` and `synth` hold the lock of their output folder, `quads export` the lock of its
output file, for as long as they write. The lock is `fcntl.flock` on `FOLDER/.quads.lock` (or `.NAME.lock` beside
a file): the kernel releases it when its holder exits in any way, kill -9 included, so a lock can never outlive
its process. The file also records who holds it (PID, host, command, start time) for the error a second
process gets; finding that record while the lock is free means the last holder was killed (a stale lock).

Holding the lock is also what makes it safe to delete temporary files (`.NAME.XXXX.tmp`, see `quads.atomic`)
left by a killed run: no other quads process is writing into the folder, so none of them is live. Subfolders
that hold a lock of their own (e.g. a teacher folder another run is using) are left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from quads.errors import QuadsError

logger = logging.getLogger(__name__)

LOCK_NAME = ".quads.lock"
TEMP_PATTERN = ".*.tmp"  # quads.atomic and quads.compression.packed write `.NAME.XXXXXXXX.tmp` beside their target
POLL_SECONDS = 0.5


class FolderBusyError(QuadsError):
    """Another live quads process is writing into the same folder (or file)."""


def lock_path_for(target: str | Path, *, is_file: bool = False) -> Path:
    """The lock file of a folder (inside it) or of a file (beside it, hidden)."""
    target = Path(target)
    return target.with_name(f".{target.name}.lock") if is_file else target / LOCK_NAME


def _read_holder(handle) -> dict:
    handle.seek(0)
    try:
        holder = json.loads(handle.read() or "{}")
    except (UnicodeDecodeError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
    if not holder:
        return "another process"
    return (f"`quads {holder.get('command', '?')}` (PID {holder.get('pid', '?')} on {holder.get('host', '?')}, "
            f"started {holder.get('started', '?')})")


@contextlib.contextmanager
def exclusive_writer(target: str | Path, command: str, *, wait: bool = False, is_file: bool = False
                     ) -> Iterator[Path]:
    """Hold the lock of `target` (a folder, created if needed, or with `is_file` a file) while the block runs.

    A second process raises FolderBusyError naming the holder, or with `wait` blocks until it is free. Once the
    lock is held, temporary files left by a killed run are removed: all of them in the folder and its
    subfolders, or for a file only its own `.NAME.*.tmp` siblings.
    """
    target = Path(target)
    if target.exists() and target.is_dir() == is_file:
        raise QuadsError(f"{target}: exists and is not a {'file' if is_file else 'folder'}")
    folder = target.parent if is_file else target
    folder.mkdir(parents=True, exist_ok=True)
    lock_path = lock_path_for(target, is_file=is_file)
    handle = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the whole run
    try:
        announced = False
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _read_holder(handle)
                if not wait:
                    raise FolderBusyError(
                        f"{target} is being written by {_describe(holder)}; wait for it to finish, pass --wait to "
                        "queue behind it, or choose another output") from None
                if not announced:
                    logger.warning("%s is being written by %s; waiting", target, _describe(holder))
                    announced = True
                time.sleep(POLL_SECONDS)
        previous = _read_holder(handle)
        if previous:
            logger.warning("%s: the previous `quads %s` (PID %s, started %s) ended without releasing its lock "
                           "(killed?); cleaning up after it", target, previous.get("command", "?"),
                           previous.get("pid", "?"), previous.get("started", "?"))
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                                 "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
        handle.flush()
        if is_file:
            for temp in folder.glob(f".{target.name}.*.tmp"):
                temp.unlink(missing_ok=True)
        else:
            remove_orphan_temp_files(folder)
        yield lock_path
        handle.seek(0)
        handle.truncate()  # released cleanly: no stale record for the next holder
        handle.flush()
    finally:
        handle.close()  # closing the descriptor releases the flock


def _locked_by_another(lock_path: Path) -> bool:
    try:
        with open(lock_path, "a+") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    except OSError:
        return True  # unreadable: leave that folder alone
    return False


def remove_orphan_temp_files(folder: Path, only: str = TEMP_PATTERN) -> list[Path]:
    """Delete temporary files matching `only` under `folder`, skipping subfolders locked by another process.
    Call only while holding `folder`'s lock: then no temp file in it can belong to a live writer."""
    removed = []
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        dirs[:] = [d for d in dirs if not (root_path / d / LOCK_NAME).exists()
                   or not _locked_by_another(root_path / d / LOCK_NAME)]
        for name in files:
            if Path(name).match(only):
                (root_path / name).unlink(missing_ok=True)
                removed.append(root_path / name)
    if removed:
        logger.info("removed %d temporary files left by a killed run in %s", len(removed), folder)
    return removed
