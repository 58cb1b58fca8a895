"""`make lint`'s `buf breaking` catches the rename that once slipped through.

Commit 2007057 renamed field 2 of TransferDownloadRequest from `path` to
`source_path`: the wire kept working, but a renamed field breaks generated
code and, with it, every client compiled against the old contract. The
FILE rules of buf.yaml report it; this test keeps them doing so.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RENAME = "2007057"
BUF = str(Path(sys.executable).with_name("buf"))


def _rev(spec: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", spec], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_buf_breaking_reports_the_source_path_rename() -> None:
    if (
        not shutil.which("git")
        or subprocess.run(
            ["git", "-C", str(ROOT), "cat-file", "-e", f"{RENAME}^{{commit}}"], capture_output=True
        ).returncode
    ):
        pytest.skip("the repository's history is not here (a shallow or exported copy)")
    found = subprocess.run(
        [
            BUF,
            "breaking",
            f".git#ref={_rev(RENAME)}",
            "--against",
            f".git#ref={_rev(RENAME + '~1')}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert found.returncode != 0
    assert (
        'Field "2" on message "TransferDownloadRequest" changed name from "path" to "source_path"'
        in found.stdout
    )
