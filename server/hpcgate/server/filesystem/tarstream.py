"""hpcgate's remote ``tar`` of many files, and the one reader of what it sends back.

Both the bulk download (:mod:`.bulk`, an archive relayed as it arrives) and
the read batches (:mod:`.smallreads`, an archive read whole) run
:data:`TAR_ARGV` over names on its stdin and read its GNU tar output with
:class:`TarReader`: fed the stream in pieces of any size, it
tells a :class:`TarSink` where each member starts, hands over the data of
the members the sink wants, and says when each of them is complete.

An incremental reader rather than :mod:`tarfile`'s stream mode, because
``tarfile.open(mode="r|")`` pulls from a blocking file object: relaying it
from an asyncio channel would need a thread and a pipe per call, and it
would buffer each member before handing it out. Here the bytes of a large
member go out as they arrive. Headers are decoded by :func:`parse_header`
rather than ``tarfile.TarInfo.frombuf``, which decodes every field and was
60 % of the relay's time for 1,000 small files. Understood: regular files,
GNU long names ('L'), pax records ('x', 'g'; GNU format does not write
them, read for robustness); the data of any other member (directory, link,
long link name 'K') is skipped after its header was shown to the sink.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from hpcgate.server.errors import ErrorKind, ServiceError

# tar -c of the NUL-separated names on stdin, to stdout.
TAR_ARGV = (
    "tar",
    "-c",
    "-f",
    "-",
    # GNU headers: no per-file extended header (pax adds 1 KiB per file for
    # atime/ctime); long names come as 'L' records, large sizes in base-256.
    "--format=gnu",
    # A named directory is reported, not expanded.
    "--no-recursion",
    # Keep the leading '/', so that member names are exactly the names given.
    "--absolute-names",
    # A link to a regular file is sent as that file.
    "--dereference",
    # A file with several names is sent in full under each of them.
    "--hard-dereference",
    # Diagnostics name files as C strings: "..." with backslash escapes.
    "--quoting-style=c",
    "--null",
    # Names from the list are never taken for options.
    "--verbatim-files-from",
    "--files-from=-",
)
BLOCK = 512
# Typeflags (POSIX ustar and GNU) that the reader tells apart.
REGULAR = (b"0", b"\0", b"7")  # file, old-style file, contiguous file
DIRECTORY = b"5"
_LONG_NAME = b"L"  # GNU: the data is the next member's name
_LONG_LINK = b"K"  # GNU: the data is the next member's link target
_PAX = (b"x", b"g")  # pax extended header records (per file, global)
_USTAR_MAGIC = b"ustar\x0000"  # POSIX ustar: the name may continue in the prefix field


@dataclass(frozen=True)
class Member:
    """The fields of a tar header block that hpcgate needs (long names resolved)."""

    name: str
    mode: int
    size: int
    mtime: int
    type: bytes

    @property
    def regular(self) -> bool:
        return self.type in REGULAR


class TarSink(Protocol):
    """What a :class:`TarReader` tells about the members it reads."""

    def start(self, member: Member) -> bool:
        """A member begins; return True to receive its data."""

    def data(self, piece: memoryview) -> None:
        """The next piece of the wanted member's data (valid only during the call)."""

    def end(self) -> None:
        """The wanted member's data is complete."""


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _number(field: bytes) -> int:
    """A numeric header field: octal text, or GNU's base-256 (high bit of the first byte)."""
    if field[0] in (0x80, 0xFF):  # 0xFF: negative, in two's complement
        value = int.from_bytes(field[1:], "big")
        return value - (1 << (8 * len(field) - 8)) if field[0] == 0xFF else value
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def parse_header(block: bytes) -> Member:
    """Decode one 512-byte header block; INTERNAL if it is not one."""
    try:
        stored = _number(block[148:156])
        if stored != sum(block) - sum(block[148:156]) + 8 * 0x20:
            raise ValueError("checksum mismatch")
        name = _text(block[0:100])
        if block[257:265] == _USTAR_MAGIC and block[345] != 0:
            name = _text(block[345:500]) + "/" + name
        return Member(
            name=name.rstrip("/") if block[156:157] == DIRECTORY else name,
            mode=_number(block[100:108]),
            size=_number(block[124:136]),
            mtime=_number(block[136:148]),
            type=block[156:157],
        )
    except ValueError as error:
        raise ServiceError(
            ErrorKind.INTERNAL, f"tar sent a malformed archive: {error}", "TAR_MALFORMED"
        ) from error


def _pax_path(records: bytes) -> str | None:
    """The ``path`` of pax extended header records (``LEN key=value\\n`` ...), if any."""
    path = None
    position = 0
    while position < len(records):
        length_text, _, _ = records[position:].partition(b" ")
        if not length_text.isdigit():
            break
        length = int(length_text)
        record = records[position + len(length_text) + 1 : position + length - 1]
        key, _, value = record.partition(b"=")
        if key == b"path":
            path = value.decode("utf-8", "surrogateescape")
        position += length
    return path


class TarReader:
    """Reads a tar stream fed in arbitrary pieces, telling ``sink`` about its members."""

    def __init__(self, sink: TarSink) -> None:
        self._sink = sink
        # A header block cut by the end of a piece, completed by the next one.
        self._carry = b""
        self._long_name: str | None = None
        # The member being read: whether the sink takes its data, what its
        # data is ("data", or the typeflag of a metadata record), bytes left,
        # and the padding that follows it.
        self._wanted = False
        self._kind = "data"
        self._left = 0
        self._padding = 0
        self._meta = bytearray()
        self.ended = False

    @property
    def truncated(self) -> bool:
        """Whether the stream so far stops inside a member's data."""
        return self._left > 0

    def feed(self, data: bytes) -> None:
        """Consume the next piece of the archive (nothing after its end-of-archive marker)."""
        if self.ended:
            return
        if self._carry:
            data, self._carry = self._carry + data, b""
        view = memoryview(data)
        position = 0
        while not self.ended:
            if self._left or self._padding:
                position += self._consume_body(view[position:])
                if self._left or self._padding:
                    break
                continue
            if len(view) - position < BLOCK:
                self._carry = bytes(view[position:])
                break
            self._header(bytes(view[position : position + BLOCK]))
            position += BLOCK

    def _consume_body(self, view: memoryview) -> int:
        """Take member data, then its padding, from ``view``; return bytes used."""
        used = 0
        if self._left:
            piece = view[: self._left]
            used = len(piece)
            self._left -= used
            if self._kind != "data":
                self._meta += piece
            elif self._wanted:
                self._sink.data(piece)
            if self._left:
                return used
            self._member_done()
        skip = min(self._padding, len(view) - used)
        self._padding -= skip
        return used + skip

    def _header(self, block: bytes) -> None:
        if not any(block):
            self.ended = True  # end-of-archive marker
            return
        info = parse_header(block)
        self._left = info.size
        self._padding = -info.size % BLOCK
        self._wanted = False
        if info.type in (_LONG_NAME, _LONG_LINK):
            self._kind = info.type.decode()
            self._meta.clear()
        elif info.type in _PAX:
            self._kind = "x"
            self._meta.clear()
        else:
            self._kind = "data"
            if self._long_name is not None:
                info = Member(self._long_name, info.mode, info.size, info.mtime, info.type)
                self._long_name = None
            self._wanted = self._sink.start(info)
        if not self._left:
            self._member_done()

    def _member_done(self) -> None:
        if self._kind == "L":
            self._long_name = _text(bytes(self._meta))
        elif self._kind == "x":
            path = _pax_path(bytes(self._meta))
            if path is not None:
                self._long_name = path
        elif self._kind == "data" and self._wanted:
            self._wanted = False
            self._sink.end()
        self._kind = "data"
