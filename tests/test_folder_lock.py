"""One writer per folder (issue 11): a second process is refused with the holder named, or waits; a lock left by
a killed process is stale and taken over, and the killed run's temporary files are removed then, never those of
a live writer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from quads.cli import main
from quads.folder_lock import LOCK_NAME, FolderBusyError, exclusive_writer

SRC = str(Path(__file__).resolve().parents[1] / "src")


def hold_lock(target: Path, command: str = "compress", *, is_file: bool = False, seconds: float = 60,
              temp_files: tuple[str, ...] = ()) -> subprocess.Popen:
    """Another process holding the lock of `target` (and writing `temp_files` into it) until killed or done."""
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from quads.folder_lock import exclusive_writer
        with exclusive_writer(Path({str(target)!r}), {command!r}, is_file={is_file}):
            for name in {list(temp_files)!r}:
                Path({str(target if not is_file else target.parent)!r}, name).write_text("half written")
            print("locked", flush=True)
            time.sleep({seconds})
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"})
    assert process.stdout.readline().strip() == "locked"
    return process


@pytest.fixture
def holders():
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_a_second_writer_is_refused_with_the_holders_pid_and_start_time(tmp_path, holders):
    holders.append(holder := hold_lock(tmp_path / "run"))
    with pytest.raises(FolderBusyError, match=rf"`quads compress` \(PID {holder.pid} on .*, started 20") as error, \
            exclusive_writer(tmp_path / "run", "compress"):
        pass
    assert "--wait" in str(error.value)


def test_two_compress_runs_into_one_out_folder_the_second_exits_2_naming_the_first(tmp_path, holders, capsys):
    holders.append(holder := hold_lock(tmp_path / "run"))
    assert main(["compress", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"PID {holder.pid}" in err and err.count("\n") == 1


def test_two_synth_runs_into_one_corpus_folder_the_second_exits_2(tmp_path, holders, capsys):
    holders.append(holder := hold_lock(tmp_path / "corpus", "synth"))
    assert main(["synth", "--out", str(tmp_path / "corpus"), "--speakers", "3", "--quiet"]) == 2
    assert f"`quads synth` (PID {holder.pid}" in capsys.readouterr().err


def test_wait_queues_behind_the_holder(tmp_path, holders):
    holders.append(hold_lock(tmp_path / "run", seconds=1.5))
    started = time.perf_counter()
    with exclusive_writer(tmp_path / "run", "compress", wait=True):
        waited = time.perf_counter() - started
    assert 0.5 < waited < 30


def test_a_lock_left_by_a_killed_process_is_stale_and_its_temp_files_are_removed(tmp_path, holders, caplog):
    holders.append(holder := hold_lock(tmp_path / "run", temp_files=(".last.pt.abcd1234.tmp", "metrics.csv")))
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    (tmp_path / "run" / "distill").mkdir()
    (tmp_path / "run" / "distill" / ".student.pt.x.tmp").write_text("orphan")
    with exclusive_writer(tmp_path / "run", "compress"):
        assert not (tmp_path / "run" / ".last.pt.abcd1234.tmp").exists()
        assert not (tmp_path / "run" / "distill" / ".student.pt.x.tmp").exists()
        assert (tmp_path / "run" / "metrics.csv").exists()
    assert f"PID {holder.pid}" in caplog.text and "killed" in caplog.text


def test_a_subfolder_locked_by_a_live_process_keeps_its_temp_files(tmp_path, holders):
    holders.append(hold_lock(tmp_path / "run" / "teacher", "pretune", temp_files=(".head.pt.live.tmp",)))
    (tmp_path / "run" / ".last.pt.dead.tmp").write_text("orphan")
    with exclusive_writer(tmp_path / "run", "compress"):
        assert (tmp_path / "run" / "teacher" / ".head.pt.live.tmp").exists()
        assert not (tmp_path / "run" / ".last.pt.dead.tmp").exists()


def test_an_export_killed_mid_write_leaves_a_temp_file_the_next_export_removes(tmp_path, holders):
    out = tmp_path / "model.quads"
    holders.append(holder := hold_lock(out, "export", is_file=True, temp_files=(".model.quads.k1ll3d.tmp",)))
    (tmp_path / ".other.quads.live.tmp").write_text("another file's")
    with pytest.raises(FolderBusyError, match="quads export"), exclusive_writer(out, "export", is_file=True):
        pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with exclusive_writer(out, "export", is_file=True):
        assert not (tmp_path / ".model.quads.k1ll3d.tmp").exists()
        assert (tmp_path / ".other.quads.live.tmp").exists()


def test_a_released_lock_leaves_no_stale_record(tmp_path, caplog):
    with exclusive_writer(tmp_path / "corpus", "synth"):
        pass
    assert (tmp_path / "corpus" / LOCK_NAME).read_text() == ""
    with exclusive_writer(tmp_path / "corpus", "synth"):
        pass
    assert "killed" not in caplog.text


def test_synth_counts_a_folder_holding_only_its_lock_file_as_empty(tmp_path):
    from quads.synth.corpus import _claim_folder

    with exclusive_writer(tmp_path / "corpus", "synth"):
        _claim_folder(tmp_path / "corpus", {"seed": 0}, force=False)
