"""Many new files are made durable with one ``syncfs`` of their filesystem (issue 20: a
first push's 2,000 blobs took 155 ms of fsyncs, 35 ms as one syncfs); few, or where there is
no syncfs, each is fsynced."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from ashat.agent import blobs


def files(tmp_path: Path, n: int) -> list[str]:
    out = []
    for i in range(n):
        p = tmp_path / f"f{i}"
        p.write_bytes(b"x")
        out.append(str(p))
    return out


def counting_fsync(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    return calls


def test_many_files_on_one_filesystem_take_one_syncfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(blobs, "_syncfs", lambda fd: synced.append(fd) or 0)
    fsyncs = counting_fsync(monkeypatch)
    blobs.fsync_paths(files(tmp_path, blobs.SYNCFS_MIN))
    assert len(synced) == 1 and fsyncs == []


def test_few_files_or_no_syncfs_or_a_failed_one_fsync_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs = counting_fsync(monkeypatch)
    (tmp_path / "few").mkdir()
    blobs.fsync_paths(files(tmp_path / "few", blobs.SYNCFS_MIN - 1))
    assert len(fsyncs) == blobs.SYNCFS_MIN - 1
    trusted = blobs._syncfs_trusted
    for fake, fs_ok in ((False, True), (lambda fd: -1, True), (lambda fd: 0, False)):
        # no syncfs here; it failed (the fsyncs then say why); a filesystem it may not cover
        fsyncs.clear()
        monkeypatch.setattr(blobs, "_syncfs", fake)
        monkeypatch.setattr(blobs, "_syncfs_trusted", trusted if fs_ok else lambda dev: False)
        many = Path(tempfile.mkdtemp(dir=tmp_path))
        blobs.fsync_paths(files(many, blobs.SYNCFS_MIN))
        assert len(fsyncs) == blobs.SYNCFS_MIN


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="syncfs(2) is Linux's")
def test_linux_has_syncfs(tmp_path: Path) -> None:
    fn = blobs._load_syncfs()
    assert fn is not False
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        assert fn(fd) == 0
    finally:
        os.close(fd)


def test_syncfs_is_trusted_on_local_journalled_filesystems_only() -> None:
    assert blobs._syncfs_trusted(os.stat("/proc").st_dev) is False  # proc: not one of them
    blobs._syncfs_trusted.cache_clear()


def test_fsync_threads_are_kept_and_a_forked_child_makes_its_own(tmp_path: Path) -> None:
    """The fsync threads outlive a call (making eight costs ~2 ms a call); a child forked
    after the parent used them (the warm helper forks each command) has none of them, and
    makes its own rather than waiting on threads that are not there."""
    dirs = [tmp_path / f"d{i}" for i in range(10)]
    for d in dirs:
        d.mkdir()
    for _ in range(5):
        blobs.fsync_paths(dirs)
    workers = [t for t in threading.enumerate() if t.name.startswith("ashat-fsync")]
    assert 0 < len(workers) <= blobs.SYNC_WORKERS
    pid = os.fork()
    if pid == 0:  # the child: done in time, or killed by the alarm
        signal.alarm(10)
        try:
            blobs.fsync_paths(dirs)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
