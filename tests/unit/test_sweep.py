"""The sweep's name pattern is exactly hpcgate's upload temporaries, and its command runs here."""

from __future__ import annotations

import fnmatch
import os
import posixpath
import subprocess
import time
from pathlib import Path

from hpcgate.server.filesystem.atomic import temp_name
from hpcgate.server.filesystem.confine import Confine
from hpcgate.server.filesystem.sweep import PART_GLOB, sweep_argv


def test_the_pattern_matches_every_temp_name_and_nothing_near() -> None:
    for target in ("/home/a/data.bin", "/home/a/" + "é" * 127, "/home/a/-x", "/home/a/.hidden"):
        assert fnmatch.fnmatchcase(posixpath.basename(temp_name(target)), PART_GLOB)
    for name in (".x.hpcgate-0123456789a.part", "x.hpcgate-0123456789ab.part", ".x.part"):
        assert not fnmatch.fnmatchcase(name, PART_GLOB)


def test_the_sweep_removes_only_old_temporaries(tmp_path: Path) -> None:
    old, fresh, other = ".a.hpcgate-0123456789ab.part", ".b.hpcgate-0123456789ab.part", "c.part"
    (tmp_path / "sub").mkdir()
    for name in (old, fresh, other):
        (tmp_path / "sub" / name).write_text("x")
    hours_ago = time.time() - 7200
    for name in (old, other):
        os.utime(tmp_path / "sub" / name, (hours_ago, hours_ago))
    argv = sweep_argv(Confine("test", (str(tmp_path),)), max_age=3600)
    result = subprocess.run(argv, capture_output=True, check=True, timeout=60)
    assert result.stdout.split(b"\0")[:-1] == [str(tmp_path / "sub" / old).encode()]
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == sorted([fresh, other])
