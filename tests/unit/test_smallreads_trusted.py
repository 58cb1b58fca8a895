"""Which tar diagnostics a batch of small reads trusts (filesystem.smallreads)."""

from __future__ import annotations

from hpcgate.server.filesystem import smallreads
from hpcgate.server.ssh import CommandResult


def test_only_diagnostics_about_absent_files_are_trusted() -> None:
    absent = (
        b'tar: "/home/alice/secret": Cannot open: Permission denied\n'
        b'tar: "/home/alice/gone": Cannot stat: No such file or directory\n'
        b"tar: Exiting with failure status due to previous errors\n"
    )
    assert smallreads.trusted(CommandResult(0, b"", b""))
    assert smallreads.trusted(CommandResult(2, b"", absent))
    for bad in (
        b'tar: "/home/alice/log": file changed as we read it\n',
        b'tar: "/home/alice/log": File shrank by 10 bytes; padding with zeros\n',
        b'tar: "/home/alice/x": Read error at byte 0, while reading 512 bytes: I/O error\n',
    ):
        assert not smallreads.trusted(CommandResult(1, b"", bad))
        assert not smallreads.trusted(CommandResult(2, b"", absent + bad))
    assert not smallreads.trusted(CommandResult(124, b"", b""))
    # Two writers' lines interleaved on one pipe are not understood, so not trusted.
    assert not smallreads.trusted(CommandResult(2, b"", b"find: tar: " + absent))


def test_a_lone_read_goes_direct_even_with_the_bucket_empty() -> None:
    state = smallreads.UserReads(burst=1, rate=0.0, tokens=1)
    assert state.take_direct()  # the burst's one token
    state.direct = 1
    assert not state.take_direct()  # another read in flight, no token: it queues
    state.direct = 0
    assert state.take_direct()  # alone again: a batch of one would only add latency
    state.batches = 1
    assert not state.take_direct()
    off = smallreads.UserReads(burst=0, rate=0.0, tokens=0)
    assert not off.take_direct()  # a burst of 0 batches every read
