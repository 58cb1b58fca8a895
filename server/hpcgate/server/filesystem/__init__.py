"""Filesystem operations on the cluster, as the calling user (SFTP first, commands where needed).

FirecREST's ``ops`` operations live in :mod:`.listing` (ls), :mod:`.ranges`
(head, tail, view), :mod:`.metadata` (stat, checksum, file), and
:mod:`.operations` (chmod, chown, mkdir, symlink, rm, compress, extract);
they reach the cluster through a :class:`.remote.Remote`. File contents move
in :mod:`.content` (with :mod:`.atomic` writes), many files at once in
:mod:`.bulk`, batched small reads in :mod:`.smallreads`; both read tar
output with :mod:`.tarstream`.

SFTP where it is faster (no process per operation, no output to parse),
commands only where SFTP has no equivalent or would move the file's bytes
over the wire. Measured on the loopback cluster (one asyncssh connection,
OpenSSH 9.2 sftp-server, medians of 10 to 50 runs):

==================  =============================  ==================================
operation           SFTP                           command (exec channel)
==================  =============================  ==================================
ls, 10 entries      lstat + readdir     1.9 ms     ``find -printf``         4.0 ms
ls, 5,300 entries   readdir             96-133 ms  ``ls -l``                45-60 ms
                                                   ``find -printf``, TZ set 21-26 ms
stat                stat                0.5 ms     ``stat -c``              3.8 ms
head / tail         open + read 64 KiB  1.5 ms     ``head`` / ``tail``      3.6 ms
chmod               setstat             0.4 ms     ``chmod``                3.4 ms
checksum, 1.3 MB    read + hash here    7.0 ms     ``sha256sum``            8.4 ms
uid -> name         (none)                         ``getent``               3.7 ms
==================  =============================  ==================================

Choices, from those numbers:

* ``ls``: SFTP for small directories (one block, most listings: twice as
  fast, no login-node process), one confined ``find -printf`` step for
  bigger ones (:mod:`.findlisting`: NUL-separated fields, numeric owners
  named by :class:`.names.IdNames`, as ``find %u`` costs a getpwuid per
  entry; TZ set, as glibc would stat /etc/localtime for each %T), 5x
  faster than SFTP from 1,000 entries up, since asyncssh decodes every
  readdir entry's attributes in Python (~15 us each). Recursive and
  dereferencing listings: SFTP, one readdir per directory, owner names from
  the readdir longname (OpenSSH's sftp-server resolves them with getpwuid,
  as ``ls -l`` does).
* ``stat``: command. SFTP v3 (all OpenSSH speaks) carries no inode, device,
  link count or ctime, and FileStat is ``os.stat_result``: ``stat -c`` is the
  only way to fill it truthfully.
* ``head``, ``tail``, ``view``: SFTP reads of just the byte range needed
  (line boundaries found by reading chunks from the right end).
* ``checksum``: command. Hashing here would pull the whole file over the
  wire; for anything but tiny files ``sha256sum`` on the cluster wins.
* ``chmod``, ``mkdir``, ``symlink``, ``rm`` of a file: SFTP. ``chown``,
  ``file``, ``rm -r``, ``tar``: commands (SFTP has no equivalent; SFTP's
  chown takes numeric ids only).
* Owner and group names of single entries (chmod, chown, mkdir, symlink
  replies) come from :class:`.names.IdNames`: learned from listings, else one
  ``getent`` exec, kept for a few minutes.

Every path is judged where it leads, on the cluster, as the caller
(:mod:`.confine`): SFTP operations act on the ``realpath`` (pipelined with
the stat they needed anyway, so no round trip is added), commands run as
one confined shell step that checks and acts (``stat``, ``file``,
``checksum``, ``chown``, ``rm -r`` and ``tar`` are such steps).

Every SFTP request is bounded by the command timeout and the RPC's deadline
(DEADLINE_EXCEEDED past it), as the remote ``timeout`` bounds commands. SFTP
reads open only regular files: sftp-server is single-threaded, and an open()
of a FIFO would block every request of the user's SFTP channel.
"""
