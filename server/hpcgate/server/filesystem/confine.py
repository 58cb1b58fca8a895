"""Where a path leads, checked on the cluster as the user: inside the configured filesystems.

:func:`~hpcgate.server.filesystem.paths.check_path` judges a path's text;
a link in it (``/home/alice/x/link -> /etc/passwd``) leads elsewhere. So
every operation also resolves its path on the cluster, as the caller,
following links, and refuses a place outside every configured filesystem
(or the real place of one, should a root itself be a link) with
PATH_OUTSIDE_FILESYSTEMS naming the request field.

How the check and the act are kept together, by transport:

* **Commands** (ls of a big directory, stat, file, checksum, chown, chmod,
  mkdir, symlink, rm, tar): one shell step checks and acts. Either it opens the file first and
  checks what the open reached (``exec 3<"$p"``, then ``readlink
  /proc/self/fd/3``) and acts through fd 3, or it enters the real directory
  (``cd -P``), checks ``$PWD``, and acts on the bare name there with a
  command that does not follow a last link (``stat`` without ``-L``,
  ``chown -h``, ``rm``, ``mkdir``, ``ln -s -T``). A link swapped in after
  the check is never followed: the fd and the cwd are held (``find .``
  lists a directory so, :mod:`.findlisting`). ``mkdir -p``
  enters the deepest existing ancestor, then makes, enters and checks one
  component at a time. chmod follows a last link (chmod(1) does), so it
  acts through something held: a directory it can enter as ``.``, a file
  or directory it can read through its fd (``chmod /proc/self/fd/3``
  reaches the open inode). What it can neither open nor enter (mode 000)
  goes by name, after ``[ -L ]``, only where no one but the caller and root
  can replace that name: the directory is the caller's or root's, and
  others may not write it or it is sticky (a sticky directory lets only a
  name's owner, the directory's owner and root replace it; the name must
  be the caller's, else chmod(2) would fail anyway: EPERM is reported
  without trying). A swap there is the caller's own doing, with nothing to
  gain: the place it could lead to is one the caller may chmod directly.
  Elsewhere it is refused (PATH_NOT_HELD). ACLs granting others write show
  in the group bits (the mask), so they count as "others may write".
* **SFTP reads and uploads** (content, ranges, checksum's size check, the
  ``.part`` file of every upload): the path is resolved (``realpath``),
  checked, and the resolved path opened; then the *handle* is checked
  (:mod:`.handles`): a readlink of sftp-server's ``/proc/self/fd/N``,
  pipelined behind the open (no round trip added; a per-client model of
  sftp-server's open fds predicts N), must name exactly the resolved path.
  A directory on the path swapped for a link between the resolve and the
  open makes the handle lead elsewhere: it is closed and refused
  (PATH_OUTSIDE_FILESYSTEMS, or PATH_CHANGED if the place is inside). Data
  then flows through the held handle only; an upload's final rename is by
  path, but moves only what the temporary name reaches then, never the
  bytes written (see :mod:`.atomic`).
* **ls** (:mod:`.listing`): a plain ``ls`` of a directory of more than one
  block is a confined step (``cd -P``, ``inside "$PWD"``, ``find .``,
  :mod:`.findlisting`). A small one stays on SFTP (2x faster, no process on
  the login node: the 10-entry ``ls`` of ``make bench``'s load scenario),
  and so do recursive and dereferencing ones, per subdirectory. SFTP v3,
  all that OpenSSH speaks, has no openat and no O_NOFOLLOW, so each
  directory is held by handle (:mod:`.helddir`): opened by its resolved
  path, its fd judged as a file's is, and listed through sftp-server's own
  ``/proc/self/fd/N``, so that neither the READDIR nor the attributes
  sftp-server gives each entry can go through a directory swapped in
  meanwhile; links in it are read, and followed, through that fd too.
  The single entry that ``ls`` of a non-directory shows, and that the
  operations above reply with, is read through its resolved parent held
  the same way (:func:`.helddir.held_entry`): changed, it is PATH_CHANGED.
* **Batches** (small-file reads, bulk download): one ``realpath -m`` over
  all paths in the batch's own command drops every path that leads outside
  before tar opens anything; then each real directory is entered, checked
  and held as an fd, and tar reads ``/proc/self/fd/K/NAME`` without
  following a last link (:mod:`.held`): a directory swapped for a link after
  the check is never walked again, a name swapped for a link is archived as
  a link and dropped. Still one command per batch, no round trip added.
  A directory the user may enter but not read (mode 711), which a shell
  cannot open, is held by a process sitting in it (its ``/proc/PID/cwd``);
  files in directories beyond the fd budget fail, saying why. Nothing is
  read by path.
* **Archives**: extract judges tar's listing, then extracts in a second
  step; an archive rewritten in between by its owner is not judged again
  (a transfer job judges it again when it runs, see ``common.sh``).
"""

from __future__ import annotations

import asyncio
import posixpath
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import asyncssh

from hpcgate.server.config import SystemConfig
from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.filesystem.errors import checked, sftp_error
from hpcgate.server.scheduler.commands import RunWithInput

REASON = "PATH_OUTSIDE_FILESYSTEMS"
# Exit status of a confined shell step whose Nth path (1, 2) leads outside;
# the real place is the last line of its stderr.
OUTSIDE_EXIT = 96
# Exit status of a step that saw a path change under it (a link appeared).
CHANGED_EXIT = 95
# Exit status of a step that found nothing to hold where acting by name is
# not safe (see chmod in :mod:`.operations`).
UNSAFE_EXIT = 94
# Checks where each argument leads: "F<path>" with every link followed,
# "E<path>" for the entry itself (its directory resolved, its name kept).
# A path need not exist (realpath -m): a target is often yet to be made.
_WHERE = """
i=0
for p do
    i=$((i + 1))
    q=${p#?}
    case $p in
        F*) r=$(realpath -m -- "$q") || exit 1 ;;
        *) d=${q%/*}; r=$(realpath -m -- "${d:-/}") || exit 1; r=${r%/}/${q##*/} ;;
    esac
    inside "$r" "$i"
done
"""


# Characters special in a POSIX extended regular expression.
_ERE_SPECIAL = re.compile(r"[.\[\]()*+?{}|^$\\]")


def path_changed(path: str, when: str) -> ServiceError:
    """PATH_CHANGED (409): ``path`` changed while ``when`` (a link appeared); a retry may pass."""
    return ServiceError(
        ErrorKind.ABORTED,
        f"{path}: changed while {when} (a link appeared); try again",
        "PATH_CHANGED",
        metadata={"path": path},
    )


def _normal(path: str) -> str:
    return "/" + posixpath.normpath(path).lstrip("/")


def under(path: str, roots: Iterable[str]) -> bool:
    """Whether the absolute ``path`` is one of ``roots`` or below one (by text)."""
    for root in roots:
        base = root.rstrip("/")
        if not base or path == base or path.startswith(base + "/"):
            return True
    return False


# Real places of the configured roots, per system, learned on first use
# (a root that is itself a link, /scratch -> /lus/scratch, leads there).
_REAL_ROOTS: dict[str, tuple[str, ...]] = {}


@dataclass(frozen=True)
class Confine:
    """One call's confinement: the system's roots, and which field named which path."""

    system: str
    configured: tuple[str, ...]
    fields: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, config: SystemConfig, fields: Mapping[str, str] | None = None) -> Confine:
        """The confinement of ``config``'s filesystems; ``fields`` maps checked paths to fields."""
        roots = tuple(_normal(fs.path) for fs in config.filesystems)
        return cls(config.name.lower(), roots, dict(fields or {}))

    @property
    def roots(self) -> tuple[str, ...]:
        """The configured roots and, once learned, their real places."""
        return self.configured + _REAL_ROOTS.get(self.system, ())

    def inside(self, real: str) -> bool:
        return under(real, self.roots)

    def refusal(self, path: str, real: str) -> ServiceError:
        """PATH_OUTSIDE_FILESYSTEMS for ``path`` (which leads to ``real``), naming its field."""
        name = self.fields.get(path, "path")
        where = ", ".join(self.configured) or "none configured"
        message = f"{path!r} leads to {real!r}, not under a configured filesystem ({where})"
        return ServiceError(
            ErrorKind.INVALID_ARGUMENT,
            f"{name}: {message}",
            REASON,
            fields={name: message},
            metadata={"path": path},
        )

    def check(self, path: str, real: str) -> str:
        """``real`` if it is inside; else the refusal of ``path``."""
        if not self.inside(real):
            raise self.refusal(path, real)
        return real

    async def learn_roots(self, client: asyncssh.SFTPClient) -> None:
        """Learn the real places of the roots once per system (one realpath each)."""
        # No lock: two first calls at once both learn the same answer.
        if self.system in _REAL_ROOTS:
            return
        found = await asyncio.gather(
            *(client.realpath(root) for root in self.configured), return_exceptions=True
        )
        real = {str(r) for r in found if isinstance(r, str)} - set(self.configured)
        _REAL_ROOTS[self.system] = tuple(sorted(real))

    @property
    def learned(self) -> bool:
        """Whether the real places of the roots are known (see :meth:`learn_roots`)."""
        return self.system in _REAL_ROOTS

    async def learn_roots_by_command(self, run: RunWithInput) -> None:
        """:meth:`learn_roots` for callers without SFTP: one ``realpath -z -e`` of the roots."""
        if self.learned or not self.configured:
            return
        result = await run(["realpath", "-z", "-e", "--", *self.configured])
        found = {r.decode(errors="surrogateescape") for r in result.stdout.split(b"\0") if r}
        _REAL_ROOTS[self.system] = tuple(sorted(found - set(self.configured)))

    # -- over SFTP ---------------------------------------------------------------

    async def resolve(self, client: asyncssh.SFTPClient, path: str, asked: str = "") -> str:
        """Where ``path`` leads (every link followed), if inside; SFTP errors name ``path``.

        A refusal names ``asked`` (default ``path``): the request's path that
        ``path`` was derived from.
        """
        await self.learn_roots(client)
        try:
            real = str(await client.realpath(path))
        except asyncssh.SFTPError as error:
            if error.code == asyncssh.FX_BAD_MESSAGE:
                # sftp-server's realpath reads each component it saw as a link;
                # one swapped for a directory in between gives EINVAL, which it
                # sends as "Bad message": the path changed under the request.
                raise path_changed(path, "was resolved") from None
            raise sftp_error(error, path) from None
        return self.check(asked or path, real)

    async def resolved_stat(
        self, client: asyncssh.SFTPClient, path: str, follow: bool = True
    ) -> tuple[str, asyncssh.SFTPAttrs]:
        """Where ``path`` leads (refused if outside) and its attributes, in one round trip.

        The attributes are those of what it leads to, or with ``follow``
        false of the name itself (lstat). The realpath and the stat are
        pipelined; the refusal wins over the stat's error, so an outside
        path says so whatever it is.
        """
        looked = client.stat(path) if follow else client.lstat(path)
        real, attrs = await asyncio.gather(
            self.resolve(client, path), looked, return_exceptions=True
        )
        if isinstance(real, BaseException):
            raise real
        if isinstance(attrs, asyncssh.SFTPError):
            raise sftp_error(attrs, path) from None
        if isinstance(attrs, BaseException):
            raise attrs
        return real, attrs

    async def resolve_entry(self, client: asyncssh.SFTPClient, path: str) -> str:
        """Where the entry ``path`` itself lives: its directory resolved, its name kept.

        For operations on a name rather than on what it leads to: an
        upload's target, renamed onto.
        """
        parent, name = posixpath.split(path)
        if not name:  # "/" itself
            return self.check(path, path)
        real = posixpath.join(await self.resolve(client, parent or "/", path), name)
        return self.check(path, real)

    # -- in shell steps ----------------------------------------------------------

    def case_pattern(self) -> str:
        """A ``case`` pattern matching the roots and everything below them, quoted."""
        patterns = []
        for root in self.roots:
            base = root.rstrip("/")
            if not base:
                return "/*"
            quoted = shlex.quote(base)
            patterns += [quoted, f"{quoted}/*"]
        return "|".join(patterns) or "''"

    def prelude(self) -> str:
        """Shell functions for a confined step (POSIX sh; see the module docstring).

        ``inside REAL N``: go on if REAL is inside, else exit OUTSIDE_EXIT+N
        with REAL on stderr. ``at PATH N``: enter the real directory holding
        PATH's last name (links above it followed) and check it; sets ``b``
        to the name. ``to PATH N``: the same for where PATH leads (every link
        followed). ``held FD N``: check where the open fd FD leads.
        """
        return (
            # bash (/bin/sh on some sites) sets $PWD after `cd -P` from the
            # path's text, walked before the chdir, not from where the chdir
            # landed, as dash does (getcwd): under bash every cd takes $PWD
            # again from the kernel, so that a check of $PWD is a proof.
            'case ${BASH_VERSION-} in ?*) cd() { builtin cd "$@" &&'
            " PWD=$(readlink -e /proc/self/cwd && echo .) && PWD=${PWD%??}; };; esac\n"
            f"inside() {{ case $1 in {self.case_pattern()}) return 0;; esac;"
            f' printf "%s\\n" "$1" >&2; exit $(({OUTSIDE_EXIT} + $2)); }}\n'
            # dash's cd does not say why it failed; stat of "dir/." says it in the
            # system's words (Permission denied, No such file, Not a directory).
            "at() { d=${1%/*}; b=${1##*/}; d=${d:-/};"
            # Should stat find it (a link or directory put back in between): changed.
            f' cd -P -- "$d" 2>/dev/null || {{ stat -c "" -- "$d/." >/dev/null || exit 1;'
            f" exit {CHANGED_EXIT}; }};"
            ' inside "${PWD%/}/$b" "$2"; }\n'
            # (the "." keeps a trailing newline of a name through $(...))
            'to() { r=$(realpath -e -- "$1" && echo .) || exit 1; r=${r%??}; at "$r" "$2"; }\n'
            'held() { r=$(readlink -e "/proc/self/fd/$1") || exit 1; inside "$r" "$2"; }\n'
        )

    def script(self, body: str) -> str:
        return self.prelude() + body

    async def check_on_cluster(self, run: RunWithInput, paths: Sequence[tuple[str, bool]]) -> None:
        """Refuse any of ``paths`` that leads outside, in one command as the caller.

        Each is ``(path, follow)``: ``follow`` judges where it leads, else the
        entry itself. For work done later (a transfer job, which checks
        again when it runs): the refusal comes now, naming the field.
        """
        await self.learn_roots_by_command(run)
        args = [("F" if follow else "E") + path for path, follow in paths]
        argv = ["sh", "-c", self.script(_WHERE), "realpath", *args]
        result = await run(argv)
        self.outcome([path for path, _ in paths], result.exit_status, result.stderr)
        checked(["realpath", *argv[1:]], result)

    def ere(self) -> str:
        """A POSIX extended regex (``grep -E``) matching exactly the paths inside.

        (Not :func:`re.escape`: it also escapes ``-`` and the like, which
        POSIX leaves undefined and GNU grep warns about on stderr.)
        """
        alternatives = [_ERE_SPECIAL.sub(r"\\\g<0>", r.rstrip("/")) for r in self.roots]
        if any(not a for a in alternatives):
            return "^/"
        return "^(" + "|".join(alternatives) + ")(/|$)"

    def outcome(self, paths: Sequence[str], exit_status: int, stderr: bytes) -> None:
        """Raise the refusal a confined step reported by its exit status, if it did."""
        index = exit_status - OUTSIDE_EXIT - 1
        if 0 <= index < len(paths):
            lines = stderr.decode(errors="replace").strip().splitlines()
            raise self.refusal(paths[index], lines[-1] if lines else "?")
        if exit_status == CHANGED_EXIT:
            raise path_changed(paths[0], "the operation ran")
