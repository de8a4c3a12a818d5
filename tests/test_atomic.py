import errno
import os
import stat

import pytest

from quads.atomic import atomic_write, atomic_write_text


def test_atomic_write_replaces_the_target(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_failed_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "checkpoint.bin"
    atomic_write_text(target, "good")

    def disk_full(file):
        file.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, disk_full)
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.bin"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_mode_the_umask_allows_not_the_temporary_files(tmp_path, umask):
    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "model.onnx", "x")
        atomic_write_text(tmp_path / "cache.bin", "y", durable=False)
    finally:
        os.umask(previous)
    for name in ("model.onnx", "cache.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name
