"""Write-then-rename: a failed write leaves the old file; a good one has ordinary permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gpt2load.fileio import atomic_path, atomic_write_text


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["x.txt"]


def test_written_file_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "y.txt", "new")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "y.txt").stat().st_mode) == 0o644
