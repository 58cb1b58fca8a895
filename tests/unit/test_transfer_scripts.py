"""The transfer jobs' scripts, run by bash right here (no Slurm): cp, mv, rm, tar.

The scripts must survive any path (quotes, ``$(...)``, newlines, leading
dashes), and print FirecREST's success line exactly when they succeeded.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from hpcgate.server.transfer import scripts

NASTY = 'it\'s $(touch pwned) `x` \n -rf "q"'


def run(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a job script as sbatch would: with bash, in the working directory."""
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / NASTY
    (root / "sub dir").mkdir(parents=True)
    (root / "a.txt").write_text("one")
    (root / "sub dir" / "b.dat").write_text("two")
    (root / "link").symlink_to("a.txt")
    return root


def test_render_quotes_every_value_and_keeps_directives_first(tmp_path: Path) -> None:
    script = scripts.cp(
        ["#SBATCH --partition=xfer"], "/a'b", f"/c{NASTY}", dereference=False, roots=["/"]
    )
    lines = script.splitlines()
    assert lines[:2] == ["#!/bin/bash", "#SBATCH --partition=xfer"]
    # No executable line comes before the directives end (sbatch stops reading there).
    assert lines[2].startswith("# hpcgate cp job")
    result = run(script.replace('"${command[@]}"', 'printf "<%s>" "${command[@]}"'), tmp_path)
    assert f"<cp><-r><--></a'b></c{NASTY}>" in result.stdout
    assert not (tmp_path / "pwned").exists()


def test_cp_copies_a_tree_and_says_so(tree: Path, tmp_path: Path) -> None:
    target = tmp_path / "copy"
    result = run(
        scripts.cp([], str(tree), str(target), dereference=False, roots=[str(tmp_path)]), tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "Files were successfully copied." in result.stdout
    assert (target / "sub dir" / "b.dat").read_text() == "two"
    assert (target / "link").is_symlink()
    followed = tmp_path / "followed"
    assert (
        run(
            scripts.cp([], str(tree), str(followed), dereference=True, roots=[str(tmp_path)]),
            tmp_path,
        ).returncode
        == 0
    )
    assert not (followed / "link").is_symlink()
    assert (followed / "link").read_text() == "one"
    assert not (tmp_path / "pwned").exists()


def test_failure_is_said_on_both_logs_and_never_as_success(tmp_path: Path) -> None:
    result = run(
        scripts.mv([], str(tmp_path / "missing"), str(tmp_path / "x"), roots=[str(tmp_path)]),
        tmp_path,
    )
    assert result.returncode == 1
    assert "FAILED: mv exited with status 1" in result.stdout
    assert "No such file or directory" in result.stderr and "FAILED" in result.stderr
    assert "successfully" not in result.stdout + result.stderr


def test_mv_and_rm(tree: Path, tmp_path: Path) -> None:
    moved = tmp_path / "-moved"
    result = run(scripts.mv([], str(tree), str(moved), roots=[str(tmp_path)]), tmp_path)
    assert "Files were successfully moved." in result.stdout
    assert not tree.exists() and (moved / "a.txt").exists()
    result = run(scripts.rm([], str(moved), roots=[str(tmp_path)]), tmp_path)
    assert "Files were successfully removed." in result.stdout
    assert not moved.exists()


@pytest.mark.parametrize("compression", ["none", "gzip", "bzip2", "xz", ""])
def test_compress_then_extract(tree: Path, tmp_path: Path, compression: str) -> None:
    archive = tmp_path / "tree.tar"
    script = scripts.compress(
        [],
        str(tree),
        str(archive),
        match_pattern=None,
        dereference=False,
        compression=compression,
        roots=[str(tmp_path)],
    )
    result = run(script, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Files were successfully compressed." in result.stdout
    with tarfile.open(archive) as opened:
        assert sorted(opened.getnames()) == sorted(
            [NASTY, f"{NASTY}/a.txt", f"{NASTY}/link", f"{NASTY}/sub dir", f"{NASTY}/sub dir/b.dat"]
        )
    out = tmp_path / "out"
    out.mkdir()
    result = run(
        scripts.extract([], str(archive), str(out), compression, roots=[str(tmp_path)]),
        tmp_path,
    )
    assert "Files were successfully extracted." in result.stdout, result.stderr
    assert (out / NASTY / "sub dir" / "b.dat").read_text() == "two"


def test_compress_with_a_pattern_takes_only_matching_files(tree: Path, tmp_path: Path) -> None:
    # find's regular expressions match whole paths, and "." no newline: a name without one.
    named = tree.rename(tmp_path / "it's $(x) -d")
    archive = tmp_path / "dat.tar"
    script = scripts.compress(
        [],
        str(named),
        str(archive),
        match_pattern=".*\\.dat",
        dereference=False,
        compression="none",
        roots=[str(tmp_path)],
    )
    result = run(script, tmp_path)
    assert "Files were successfully compressed." in result.stdout, result.stderr
    with tarfile.open(archive) as opened:
        assert opened.getnames() == ["it's $(x) -d/sub dir/b.dat"]


def test_a_failed_compress_leaves_nothing_at_the_target(tmp_path: Path) -> None:
    archive = tmp_path / "archive.tar.gz"
    archive.write_text("previous")
    script = scripts.compress(
        [],
        str(tmp_path / "missing"),
        str(archive),
        match_pattern=None,
        dereference=False,
        compression="gzip",
        roots=[str(tmp_path)],
    )
    result = run(script, tmp_path)
    assert result.returncode == 1 and "successfully" not in result.stdout
    assert archive.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archive.tar.gz"]


def test_a_job_refuses_paths_leading_outside_its_roots(tree: Path, tmp_path: Path) -> None:
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    (outside / "victim").write_text("kept")
    (inside / "out").symlink_to(outside)
    roots = [str(inside)]
    jobs = [
        scripts.rm([], str(inside / "out" / "victim"), roots=roots),
        scripts.cp([], str(inside / "out" / "victim"), str(inside / "copy"), False, roots=roots),
        scripts.mv([], str(tree), str(inside / "out" / "moved"), roots=roots),
        scripts.cp([], str(inside), str(tmp_path / "copy2"), True, roots=[str(tmp_path / "x")]),
    ]
    (inside / "f").write_text("f")
    for script in jobs:
        result = run(script, tmp_path)
        assert result.returncode == 1, result.stdout
        assert "not under a configured filesystem" in result.stderr
        assert "successfully" not in result.stdout
    assert (outside / "victim").read_text() == "kept"
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert sorted(p.name for p in inside.iterdir()) == ["f", "out"]
    assert tree.exists()
    # With dereference, a link in the tree leading outside stops the whole copy.
    result = run(scripts.cp([], str(inside), str(inside / "c"), True, roots=roots), tmp_path)
    assert result.returncode == 1 and not (inside / "c").exists()


def _tar_of(path: Path, *members: tarfile.TarInfo) -> None:
    with tarfile.open(path, "w") as made:
        for member in members:
            made.addfile(member, io.BytesIO(b"x" * member.size))


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = 1 if kind == tarfile.REGTYPE else 0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def test_an_extract_job_judges_the_archive_when_it_runs(tmp_path: Path) -> None:
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    target = inside / "into"
    target.mkdir(parents=True)
    outside.mkdir()
    (target / "out").symlink_to(outside)  # a link already in the target
    hostile = {
        "dotdot": [_member("ok"), _member("../escaped")],
        "abs-link": [_member("evil", tarfile.SYMTYPE, str(outside))],
        "rel-link": [_member("d/", tarfile.DIRTYPE), _member("d/l", tarfile.SYMTYPE, "../../..")],
        "through": [_member("out/dropped")],
        "quoted": [_member('we"ird\\ \n/../x')],
    }
    for name, members in hostile.items():
        archive = inside / f"{name}.tar"
        _tar_of(archive, *members)
        script = scripts.extract([], str(archive), str(target), "none", roots=[str(inside)])
        result = run(script, tmp_path)
        assert result.returncode == 1, (name, result.stdout)
        assert "successfully" not in result.stdout
        assert sorted(p.name for p in target.iterdir()) == ["out"], name
        assert list(outside.iterdir()) == [], name
    odd = 'we"ird\\ é \n name'
    benign = inside / "benign.tar"
    _tar_of(
        benign,
        _member(odd),
        _member("d/", tarfile.DIRTYPE),
        _member("d/l", tarfile.SYMTYPE, f"../{odd}"),
    )
    result = run(
        scripts.extract([], str(benign), str(target), "none", roots=[str(inside)]), tmp_path
    )
    assert "Files were successfully extracted." in result.stdout, result.stderr
    assert (target / "d" / "l").read_text() == "x"
