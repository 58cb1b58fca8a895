"""The pure parts of the filesystem operations: parsing, validation, head/tail ranges.

The head/tail byte ranges are checked against GNU ``head`` and ``tail``
themselves, run on the same bytes.
"""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

import asyncssh
import pytest

from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.filesystem import entries, findlisting, listing, names, parse, ranges
from hpcgate.server.filesystem.names import IdNames, RunArgv

# -- listings ---------------------------------------------------------------------


def test_longname_gives_user_and_group() -> None:
    line = b"-rw-r--r--    1 alice    hpcproj        51 Nov 23 01:47 a b  c"
    assert names.longname_owner(line) == ("alice", "hpcproj")
    assert names.longname_owner(line.decode()) == ("alice", "hpcproj")


def test_longname_with_long_names_and_odd_file_name() -> None:
    user = "u" * 40
    line = f"drwxr-x---  12 {user} 1002 4096 Jan  1  2024 -x $(y) 'z'\n".encode()
    assert names.longname_owner(line) == (user, "1002")


@pytest.mark.parametrize("line", [None, b"", b"f", b"rw 1 a b 2 n", b"-rw-r--r-- x alice g 5 n"])
def test_longname_without_owner(line: bytes | None) -> None:
    assert names.longname_owner(line) is None


def test_getent_lines_by_database() -> None:
    output = (
        b"alice:x:1001:1002:Alice A:/home/alice:/bin/bash\n"
        b"hpcproj:x:1003:alice,bob\n"
        b"junk line\n"
        b"bob:x:1002:1004::/home/bob:/bin/sh\n"
    )
    assert parse.parse_getent(output) == {
        ("passwd", 1001): "alice",
        ("group", 1003): "hpcproj",
        ("passwd", 1002): "bob",
    }


def test_entry_from_sftp_attrs() -> None:
    attrs = asyncssh.SFTPAttrs(permissions=0o104755, uid=1, gid=2, size=123, mtime=1_700_000_000)
    entry = listing.entry_from_attrs("f", attrs, "alice", "hpcproj", link_target="ignored")
    assert entry == entries.FileEntry(
        name="f",
        type="-",
        link_target=None,
        user="alice",
        group="hpcproj",
        permissions="rwsr-xr-x",
        last_modified=1_700_000_000,
        size=123,
    )


@pytest.mark.parametrize(
    ("mode", "kind", "permissions"),
    [
        (0o040755, "d", "rwxr-xr-x"),
        (0o120777, "l", "rwxrwxrwx"),
        (0o010600, "p", "rw-------"),
        (0o140755, "s", "rwxr-xr-x"),
        (0o020620, "c", "rw--w----"),
        (0o060660, "b", "rw-rw----"),
        (0o041777, "d", "rwxrwxrwt"),
        (0o102640, "-", "rw-r-S---"),
    ],
)
def test_entry_types_and_permission_letters(mode: int, kind: str, permissions: str) -> None:
    entry = listing.entry_from_attrs("x", asyncssh.SFTPAttrs(permissions=mode), "u", "g", "t")
    assert (entry.type, entry.permissions) == (kind, permissions)
    assert entry.link_target == ("t" if kind == "l" else None)


def test_names_that_are_not_utf8_are_shown_escaped() -> None:
    assert parse.decode_name(b"caf\xe9") == "caf\\xe9"
    assert parse.decode_name("café".encode()) == "café"


# -- command output ---------------------------------------------------------------


def test_stat_output() -> None:
    result = parse.parse_stat(b"81a4 64317775 50 1 26191 1000 8 1689669477 1685517840 1685517841\n")
    assert result == parse.FileStat(
        mode=0o100644,
        ino=64317775,
        dev=50,
        nlink=1,
        uid=26191,
        gid=1000,
        size=8,
        atime=1689669477,
        mtime=1685517840,
        ctime=1685517841,
    )


def test_unexpected_stat_output_is_internal() -> None:
    with pytest.raises(ServiceError) as caught:
        parse.parse_stat(b"81a4 1 2\n")
    assert caught.value.code == ErrorKind.INTERNAL


DIGEST = "b76ae83c50d6104039c80d312402af3027661e07066325526ad997daf6362bbc"


@pytest.mark.parametrize(
    "output",
    [
        f"{DIGEST}  /home/alice/f.txt\n".encode(),
        # sha256sum escapes names with a newline or backslash, and marks the line.
        f"\\{DIGEST}  /home/alice/a\\nb\n".encode(),
    ],
)
def test_sha256sum_output(output: bytes) -> None:
    assert parse.parse_sha256sum(output) == DIGEST


def test_unexpected_sha256sum_output_is_internal() -> None:
    with pytest.raises(ServiceError) as caught:
        parse.parse_sha256sum(b"sha256sum: oops\n")
    assert caught.value.code == ErrorKind.INTERNAL


# -- request validation -------------------------------------------------------------


@pytest.mark.parametrize(("mode", "bits"), [("755", 0o755), ("0600", 0o600), ("4755", 0o4755)])
def test_octal_modes(mode: str, bits: int) -> None:
    assert parse.parse_mode(mode) == bits


@pytest.mark.parametrize("mode", ["", "8", "999", "u+x", "07555", "-755", " 755", "0o755"])
def test_bad_modes_name_the_field(mode: str) -> None:
    with pytest.raises(ServiceError) as caught:
        parse.parse_mode(mode)
    assert caught.value.code == ErrorKind.INVALID_ARGUMENT
    assert list(caught.value.fields) == ["mode"]


@pytest.mark.parametrize(
    ("owner", "group", "spec"),
    [("alice", "", "alice"), ("alice", "hpcproj", "alice:hpcproj"), ("", "hpcproj", ":hpcproj")],
)
def test_owner_spec(owner: str, group: str, spec: str) -> None:
    assert parse.owner_spec(owner, group) == spec


@pytest.mark.parametrize(
    ("owner", "group", "field"),
    [("", "", "owner"), ("a:b", "", "owner"), ("", "g:x", "group"), ("a\x00", "", "owner")],
)
def test_bad_owner_specs(owner: str, group: str, field: str) -> None:
    with pytest.raises(ServiceError) as caught:
        parse.owner_spec(owner, group)
    assert list(caught.value.fields) == [field]


def test_tar_compression_flags() -> None:
    assert parse.tar_compression("") == parse.tar_compression("gzip") == ("-z",)
    assert parse.tar_compression("none") == ()
    with pytest.raises(ServiceError) as caught:
        parse.tar_compression("zip")
    assert list(caught.value.fields) == ["compression"]


# -- head and tail, against GNU coreutils ----------------------------------------------

CONTENTS = [
    b"",
    b"\n",
    b"\n\n\n",
    b"one line without newline",
    b"a\nb\nc\n",
    b"a\nb\nc",
    b"a\n\nb\n\n\nc\n\n",
    b"x" * 50 + b"\n" + b"y" * 7 + b"\n" + b"z" * 33,
    b"".join(b"line %d\n" % i for i in range(40)),
    "é\nü\n€\n".encode(),
]
COUNTS = [0, 1, 2, 3, 7, 100]


def _gnu(tool: str, file: Path, unit: str, count: int, skip: bool) -> bytes:
    """What GNU head/tail print for FirecREST's command lines (``head -N``, ``tail +N``)."""
    if tool == "head":
        arg = f"-{count}" if skip else str(count)
    else:
        arg = f"+{count}" if skip else str(count)
    option = "--bytes" if unit == "bytes" else "--lines"
    return subprocess.run(
        [tool, f"{option}={arg}", "--", str(file)], check=True, capture_output=True
    ).stdout


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scan in 4-byte chunks, so that line boundaries fall across chunk edges."""
    monkeypatch.setattr(ranges, "SCAN_CHUNK", 4)


@pytest.mark.parametrize("content", CONTENTS)
async def test_ranges_match_gnu_head_and_tail(content: bytes, tmp_path: Path) -> None:
    file = tmp_path / "f"
    file.write_bytes(content)
    reads = 0

    async def read(offset: int, length: int) -> bytes:
        nonlocal reads
        reads += 1
        assert 0 <= offset <= len(content) and length >= 0
        return content[offset : offset + length]

    for tool, unit, count, skip in itertools.product(
        ("head", "tail"), ("lines", "bytes"), COUNTS, (False, True)
    ):
        nbytes = count if unit == "bytes" else None
        lines = count if unit == "lines" else None
        pick = ranges.head_range if tool == "head" else ranges.tail_range
        start, end = await pick(read, len(content), nbytes, lines, skip)
        expected = _gnu(tool, file, unit, count, skip)
        assert content[start:end] == expected, (tool, unit, count, skip)


async def test_default_is_ten_lines() -> None:
    content = b"".join(b"%d\n" % i for i in range(30))

    async def read(offset: int, length: int) -> bytes:
        return content[offset : offset + length]

    start, end = await ranges.head_range(read, len(content), None, None, False)
    assert content[start:end] == b"".join(b"%d\n" % i for i in range(10))
    start, end = await ranges.tail_range(read, len(content), None, None, False)
    assert content[start:end] == b"".join(b"%d\n" % i for i in range(20, 30))


async def test_tail_reads_only_the_end() -> None:
    """tail of a big file reads chunks from the end, not the whole file."""
    size = 10 * 1024 * 1024
    asked: list[tuple[int, int]] = []

    async def read(offset: int, length: int) -> bytes:
        asked.append((offset, length))
        return b"\n" * min(length, size - offset)

    assert await ranges.tail_range(read, size, None, 3, False) == (size - 3, size)
    assert sum(length for _, length in asked) < 64


@pytest.mark.parametrize(
    ("nbytes", "lines", "skip", "field"),
    [(1, 1, False, "bytes"), (-1, None, False, "bytes"), (None, -2, False, "lines")],
)
def test_bad_counts_name_the_field(
    nbytes: int | None, lines: int | None, skip: bool, field: str
) -> None:
    with pytest.raises(ServiceError) as caught:
        ranges.check_counts(nbytes, lines, skip, "skipTrailing")
    assert list(caught.value.fields) == [field]


def test_skip_needs_a_count() -> None:
    with pytest.raises(ServiceError) as caught:
        ranges.check_counts(None, None, True, "skipHeading")
    assert list(caught.value.fields) == ["skipHeading"]


# -- the uid/gid name cache -------------------------------------------------------------


def test_names_expire() -> None:
    known = names.IdNames(ttl=-1)
    known.learn("passwd", 1, "alice")
    assert known.get("passwd", 1) is None
    known = names.IdNames()
    known.learn("passwd", 1, "alice")
    assert known.get("passwd", 1) == "alice"
    assert known.get("group", 1) is None


def test_name_cache_is_bounded() -> None:
    known = names.IdNames(capacity=2)
    for ident in range(5):
        known.learn("group", ident, f"g{ident}")
    assert known.get("group", 4) == "g4"
    assert known.get("group", 0) is None


def _find_record(mode: str, name: bytes, target: bytes = b"", uid: int = 1001) -> bytes:
    """One record as ``find -printf findlisting.FORMAT`` writes it."""
    fields = [mode.encode(), str(uid).encode(), b"1002", b"42", b"1700000000", name, target]
    return b"".join(field + b"\0" for field in fields)


def _known_names() -> IdNames:
    known = IdNames()
    known.learn("passwd", 1001, "alice")
    known.learn("group", 1002, "hpcproj")
    return known


async def _no_getent(argv: Sequence[str]) -> bytes:
    raise AssertionError(f"the names were cached, yet {argv} ran")


async def _found(
    output: bytes,
    cuts: Iterable[int] = (),
    *,
    show_hidden: bool = False,
    numeric: bool = False,
    known: IdNames | None = None,
    run: RunArgv = _no_getent,
) -> list[entries.FileEntry]:
    """What :class:`findlisting.Found` lists of ``output`` fed in pieces cut at ``cuts``."""
    found = findlisting.Found(known or _known_names(), run, show_hidden, numeric)
    bounds = [0, *sorted(cuts), len(output)]
    for start, end in itertools.pairwise(bounds):
        await found.feed(output[start:end])
    return await found.entries()


async def test_find_listing_parses_adversarial_names_field_by_field() -> None:
    # A newline, a tab, spaces and what looks like a mode in a name cannot shift a field.
    tricky = b"a\nb\t c -rw-r--r--"
    output = b"".join(
        [
            _find_record("-rw-r--r--", b"zeta"),
            _find_record("lrwxrwxrwx", b"link", b"../target with\nnewline"),
            _find_record("drwxr-x---", tricky),
            _find_record("-rw-------", b".hidden"),
        ]
    )
    listed = await _found(output)
    assert [e.name for e in listed] == ["a\nb\t c -rw-r--r--", "link", "zeta"]  # C-locale order
    assert listed[1] == entries.FileEntry(
        "link", "l", "../target with\nnewline", "alice", "hpcproj", "rwxrwxrwx", 1_700_000_000, 42
    )
    assert listed[0].type == "d" and listed[0].link_target is None
    assert (await _found(output, show_hidden=True))[0].name == ".hidden"
    numeric = await _found(output, numeric=True)
    assert (numeric[2].user, numeric[2].group) == ("1001", "1002")


async def test_find_listing_shows_names_that_are_not_utf8_and_sorts_them_by_bytes() -> None:
    latin1 = _find_record("-rw-r--r--", b"caf\xe9")  # Latin-1, not UTF-8
    rest = b"".join(
        [
            _find_record("-rw-r--r--", "café".encode()),
            _find_record("-rw-r--r--", b"cafe"),
            _find_record("lrwxrwxrwx", b"l", b"\xff"),
        ]
    )
    # Byte order: "cafe" < "caf\xc3\xa9" (UTF-8 é) < "caf\xe9" < ... ; "l" last.
    want = ["cafe", "café", "caf\\xe9", "l"]
    listed = await _found(latin1 + rest)
    assert [e.name for e in listed] == want
    assert listed[3].link_target == "\\xff"
    # The same when the name that is not UTF-8 comes in a chunk of its own, after the rest.
    assert [e.name for e in await _found(rest + latin1, [len(rest)])] == want


async def test_find_listing_is_the_same_wherever_the_output_is_cut() -> None:
    # Chunks end anywhere: mid-field, mid-record, inside a UTF-8 character.
    records = [_find_record("-rw-r--r--", f"ünïcode-{i}".encode()) for i in (3, 1, 4, 0, 2)]
    output = b"".join(records) + _find_record("lrwxrwxrwx", "lïnk".encode(), "tärget".encode())
    whole = await _found(output)
    assert [e.name for e in whole] == ["lïnk"] + [f"ünïcode-{i}" for i in range(5)]
    assert whole[0].link_target == "tärget"
    for cut in range(1, len(output)):
        assert await _found(output, [cut]) == whole, cut
    assert await _found(output, range(1, len(output))) == whole  # a byte at a time


async def test_find_listing_names_owners_the_cache_lacks_with_one_getent_at_the_end() -> None:
    one, two = _find_record("-rw-r--r--", b"one"), _find_record("-rw-r--r--", b"two", uid=1003)
    calls: list[Sequence[str]] = []

    async def getent(argv: Sequence[str]) -> bytes:
        calls.append(argv)
        return b"carol:x:1003:1003::/home/carol:/bin/sh\n"

    listed = await _found(two + one, [len(two)], known=_known_names(), run=getent)
    assert [(e.name, e.user, e.group) for e in listed] == [
        ("one", "alice", "hpcproj"),
        ("two", "carol", "hpcproj"),
    ]
    assert len(calls) == 1


async def test_find_listing_of_an_empty_directory_and_of_a_cut_off_output() -> None:
    assert await _found(b"", show_hidden=True) == []
    with pytest.raises(ValueError, match="inside a record"):
        await _found(_find_record("-rw-r--r--", b"half")[:-3])
