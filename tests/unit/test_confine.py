"""The confinement's pieces, run right here: shell steps in a temporary tree, tar listings.

The shell functions of :meth:`Confine.prelude` run under ``sh`` (dash on
Debian, as on the cluster) against real links in ``tmp_path``; the archive
judgement against GNU tar's own listing of archives made here.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from hpcgate.server.errors import ServiceError
from hpcgate.server.filesystem import archive
from hpcgate.server.filesystem.confine import OUTSIDE_EXIT, Confine, under


@pytest.fixture
def site(tmp_path: Path) -> tuple[Confine, Path, Path]:
    """A confinement to ``inside``; ``inside`` holds links to itself and to ``outside``."""
    inside, outside = tmp_path / "in side", tmp_path / "out"
    (inside / "dir").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_text("secret")
    (inside / "file").write_text("file")
    (inside / "out").symlink_to(outside)
    (inside / "secret").symlink_to(outside / "secret")
    (inside / "good").symlink_to(inside / "file")
    return Confine("test", (str(inside),)), inside, outside


def step(confine: Confine, body: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["sh", "-c", confine.script(body), "step", *args], capture_output=True, timeout=30
    )


def test_under_judges_by_components_not_prefixes() -> None:
    assert under("/home", ["/home"]) and under("/home/a/b", ["/home/"])
    assert not under("/homework", ["/home"]) and not under("/", ["/home"])
    assert under("/anything", ["/"])


def test_to_follows_every_link_and_refuses_outside(site: tuple[Confine, Path, Path]) -> None:
    confine, inside, outside = site
    ok = step(confine, 'to "$1" 1; printf "%s|%s" "$PWD" "$b"', str(inside / "good"))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.decode() == f"{inside}|file"
    for path in (inside / "secret", inside / "out" / "secret"):
        refused = step(confine, 'to "$1" 1; echo acted', str(path))
        assert refused.returncode == OUTSIDE_EXIT + 1
        assert refused.stdout == b""  # nothing after the check ran
        assert refused.stderr.decode().strip() == str(outside / "secret")


def test_at_keeps_the_last_name_but_resolves_the_directories(
    site: tuple[Confine, Path, Path],
) -> None:
    confine, inside, _ = site
    # The link itself is inside: at does not follow it.
    ok = step(confine, 'at "$1" 1; printf "%s" "$b"', str(inside / "secret"))
    assert ok.returncode == 0 and ok.stdout == b"secret"
    # Through a link in the directories: outside, and the second path's number.
    refused = step(confine, 'at "$1" 2; echo acted', str(inside / "out" / "new"))
    assert refused.returncode == OUTSIDE_EXIT + 2 and refused.stdout == b""


def test_held_judges_what_an_open_reached(site: tuple[Confine, Path, Path]) -> None:
    confine, inside, _ = site
    body = 'exec 3<"$1" || exit 1; held 3 1; cat <&3'
    assert step(confine, body, str(inside / "good")).stdout == b"file"
    refused = step(confine, body, str(inside / "secret"))
    assert refused.returncode == OUTSIDE_EXIT + 1 and b"secret" not in refused.stdout


def test_a_missing_directory_says_why(site: tuple[Confine, Path, Path]) -> None:
    confine, inside, _ = site
    failed = step(confine, 'at "$1" 1', str(inside / "missing" / "x"))
    assert failed.returncode == 1 and b"No such file or directory" in failed.stderr


def test_outcome_raises_the_refusal_naming_the_field() -> None:
    confine = Confine("test", ("/home",), {"/home/a/l": "sourcePath"})
    with pytest.raises(ServiceError) as caught:
        confine.outcome(["/home/a/l"], OUTSIDE_EXIT + 1, b"noise\n/etc/passwd\n")
    assert caught.value.reason == "PATH_OUTSIDE_FILESYSTEMS"
    assert list(caught.value.fields) == ["sourcePath"]
    assert "/etc/passwd" in caught.value.message
    confine.outcome(["/home/a/l"], 0, b"")  # success is no refusal
    confine.outcome(["/home/a/l"], 1, b"")  # nor is a plain failure


def test_the_ere_and_case_pattern_match_exactly_the_roots(tmp_path: Path) -> None:
    confine = Confine("test", ("/home/a-b.c", "/s [x]"))
    names = ["/home/a-b.c", "/home/a-b.c/f", "/home/a-bxc/f", "/s [x]/y", "/s x/y", "/"]
    listed = b"".join(name.encode() + b"\0" for name in names)
    found = subprocess.run(
        ["grep", "-z", "-E", "-e", confine.ere()], input=listed, capture_output=True, check=True
    )
    assert found.stderr == b""  # no warnings about stray escapes
    assert found.stdout.split(b"\0")[:-1] == [b"/home/a-b.c", b"/home/a-b.c/f", b"/s [x]/y"]
    script = f'for p do case $p in {confine.case_pattern()}) echo "$p";; esac; done'
    matched = subprocess.run(["sh", "-c", script, "sh", *names], capture_output=True, check=True)
    assert matched.stdout.decode().splitlines() == ["/home/a-b.c", "/home/a-b.c/f", "/s [x]/y"]


# -- archives ------------------------------------------------------------------------------


def _listing(tmp_path: Path, *members: tarfile.TarInfo) -> list[archive.Member]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as made:
        for member in members:
            made.addfile(member, io.BytesIO(b"x" * member.size))
    path = tmp_path / "a.tar"
    path.write_bytes(buffer.getvalue())
    listed = subprocess.run(
        ["tar", *archive.LIST_OPTIONS, "-f", str(path)], capture_output=True, check=True
    )
    return archive.parse_listing(listed.stdout)


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, 1 if kind == tarfile.REGTYPE else 0
    return info


def test_tar_listings_parse_back_to_names_and_links(tmp_path: Path) -> None:
    odd = 'we ird "name"\n\\ é'
    members = _listing(
        tmp_path,
        _info("d/", tarfile.DIRTYPE),
        _info(f"d/{odd}"),
        _info("d/l", tarfile.SYMTYPE, f"../{odd} -> x"),
        _info("d/h", tarfile.LNKTYPE, f"d/{odd}"),
    )
    assert members == [
        archive.Member("d", "d/"),
        archive.Member("-", f"d/{odd}"),
        archive.Member("l", "d/l", f"../{odd} -> x"),
        archive.Member("h", "d/h", f"d/{odd}"),
    ]


def test_places_refuse_dotdot_and_list_what_to_resolve() -> None:
    members = [
        archive.Member("-", "a/f"),
        archive.Member("-", "a/g"),
        archive.Member("l", "a/l", "../../up"),
    ]
    reached = archive.places("/home/x.tar", "/home/t", members)
    assert [(p.path, p.link) for p in reached] == [("/home/t/a", False), ("/home/up", True)]
    with pytest.raises(ServiceError) as caught:
        archive.places("/home/x.tar", "/home/t", [archive.Member("-", "a/../../x")])
    assert caught.value.reason == "PATH_OUTSIDE_FILESYSTEMS"


def test_judge_refuses_a_directory_leaving_the_target_or_a_link_leaving_the_roots() -> None:
    reached = [archive.Place("a/f", "/home/t/a", link=False), archive.Place("l", "/x", link=True)]

    def inside(path: str) -> bool:
        return under(path, ["/home"])

    archive.judge("/home/x.tar", "/home/t", reached, ["/home/t/a", "/home/y"], inside)
    for resolved in (["/home/other", "/home/y"], ["/home/t/a", "/etc"]):
        with pytest.raises(ServiceError):
            archive.judge("/home/x.tar", "/home/t", reached, resolved, inside)


# Swaps work/d (a real directory inside) with work/d.link (a link to the
# outside) until work/stop appears: renameat2(RENAME_EXCHANGE), atomically.
_FLIPPER = r"""
import ctypes, os, sys
os.chdir(sys.argv[1])
os.symlink(sys.argv[2], "d.link")
exchange = ctypes.CDLL(None, use_errno=True).renameat2
while not os.path.exists("stop"):
    exchange(-100, b"d", -100, b"d.link", 2)
"""


@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_at_lands_nothing_outside_while_a_directory_flips(shell: str, tmp_path: Path) -> None:
    """``at`` + an act on the bare name, under either /bin/sh, while d flips to a link out.

    bash computes $PWD after ``cd -P`` from the path's text before the chdir
    (without the prelude's ``cd``, 2-3 % of these mkdirs landed outside).
    """
    work, outside = tmp_path / "inside" / "work", tmp_path / "outside"
    (work / "d").mkdir(parents=True)
    outside.mkdir()
    confine = Confine("test", (str(tmp_path / "inside"),))
    body = (
        "i=0; while [ $i -lt 2000 ]; do i=$((i + 1));"
        ' ( at "$1/d/n$i" 1 && mkdir -- "$b" ) 2>/dev/null; done\n'
    )
    flipper = subprocess.Popen([sys.executable, "-c", _FLIPPER, str(work), str(outside)])
    try:
        subprocess.run([shell, "-c", confine.script(body), "step", str(work)], timeout=120)
    finally:
        (work / "stop").touch()
        flipper.wait(timeout=30)
    assert list(outside.iterdir()) == []
    assert any((work / name).is_dir() and any((work / name).iterdir()) for name in ("d", "d.link"))
