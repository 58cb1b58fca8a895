"""The names a held batch step gives tar, split off the archive after them (filesystem.held)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from hpcgate.server.filesystem.held import HeldNames, hold_function, unheld, why_unheld


@pytest.mark.parametrize("piece", [1, 2, 5, 1000])
def test_names_then_archive_however_the_stream_is_cut(piece: int) -> None:
    stream = b"/proc/self/fd/10/a\0\0./b\nc\0" + b"ARCHIVE\0\0"
    held = HeldNames(3)
    archive = b""
    for start in range(0, len(stream), piece):
        archive += held.feed(stream[start : start + piece])
    assert held.names == ["/proc/self/fd/10/a", "", "./b\nc"]
    assert archive == b"ARCHIVE\0\0"


def test_no_names_until_all_are_in_and_none_for_no_paths() -> None:
    held = HeldNames(2)
    assert held.feed(b"a\0b") == b"" and held.names is None
    assert HeldNames(0).feed(b"X") == b"X"


def test_why_a_directory_was_not_held_is_told_of_its_files() -> None:
    reasons = unheld("hpcgate: unheld: 11 Permission denied\ntar: other\n")
    assert why_unheld("/proc/self/fd/11/x", reasons) == "Permission denied"
    assert why_unheld("/proc/self/fd/10/x", reasons) is None
    assert why_unheld("./x", reasons) is None


def _held_reads(root: Path, held_max: int, *paths: str) -> tuple[list[str], str]:
    """Run ``hold`` here in bash over ``paths``; what each name it gave reads, and stderr."""
    quoted = shlex.quote(str(root))
    script = (
        hold_function(f"{quoted}|{quoted}/*")
        + 'hold realpath -z -m -- "$@" || exit 1\n'
        + 'for n in "${names[@]}"; do cat -- "$n" 2>/dev/null || printf "<unread>"; echo; done\n'
    )
    env = {
        "PATH": os.environ["PATH"],
        "inside": f"^{re.escape(str(root))}/",
        "held_max": str(held_max),
    }
    done = subprocess.run(
        ["bash", "-c", script, "held", *paths], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.splitlines(), done.stderr


def test_directories_beyond_the_fd_budget_are_never_read_by_path(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text(name)
    reads, stderr = _held_reads(tmp_path, 1, f"{tmp_path}/a/f", f"{tmp_path}/b/f")
    assert reads == ["a", "<unread>"]
    assert unheld(stderr) == {"9": "more than 1 directories in one call"}
    reads, _ = _held_reads(tmp_path, 2, f"{tmp_path}/a/f", f"{tmp_path}/b/f")
    assert reads == ["a", "b"]
