"""tar over held directories: the batches' check and read in one step, without a race.

A batch (:mod:`.smallreads`, :mod:`.bulk`) used to resolve its paths once
(``realpath -m``) and let tar open them by path moments later: a directory
on a path swapped for a link in between led tar outside. Holding an fd per
*file* would not scale (100,000 files); holding each *directory* does:

* one ``realpath -z -m`` resolves every asked path (links followed, as
  FirecREST's download follows them), and one ``awk`` numbers the distinct
  real parent directories (fd 10, 11, ... in order of first use), drops
  the paths leading outside (reported on stderr by their position), and
  names each file for tar ``/proc/self/fd/K/NAME``;
* bash opens each directory as fd K, then one ``readlink`` of
  ``/proc/$$/fd/K`` for them all says where each open fd really leads,
  which must be inside (else fd K becomes /dev/null): the directory held is
  the one checked;
* tar (and find) inherit the fds. For them ``/proc/self/fd/K`` is the held
  directory itself, not a path walked again, and tar without
  ``--dereference`` does not follow ``NAME`` should it have become a link:
  it archives the link, which every reader drops as not a regular file.

The names tar was given come first on stdout, one per asked path in order
(NUL-terminated, empty for a path leading outside), then the archive:
:class:`HeldNames` splits them off, so that members map back to the asked
paths. No round trip is added: it is still one command per batch.

What cannot be held so: a directory the user may enter but not read (mode
711: opening it fails) and directories beyond the fd budget
(``held_max``, the raised soft limit less a margin). Their files go to tar
by real path, as before (a last link is still not followed); the narrow
race of a swapped directory remains for those alone.
"""

from __future__ import annotations

import re

from hpcgate.server.filesystem.tarstream import TAR_ARGV

# The bulk tar without --dereference: a name that became a link is archived
# as the link (links asked for were resolved by realpath before).
HELD_TAR_ARGV = tuple(arg for arg in TAR_ARGV if arg != "--dereference")

# Reads real paths (NUL-separated) on stdin; writes the number of held
# directories, the number of paths outside, the directories, then one tar
# name per path ("" if outside). ENVIRON: inside (an ERE), held_max.
_AWK = r"""
BEGIN { RS = "\0"; ORS = "\0"; inside = ENVIRON["inside"]; max = ENVIRON["held_max"] + 0 }
{
    if ($0 !~ inside) {
        name[NR] = ""
        outside++
        printf "hpcgate: outside: %d\n", NR - 1 > "/dev/stderr"
        next
    }
    match($0, /^.*\//)
    d = substr($0, 1, RLENGTH - 1)
    if (d == "") d = "/"
    if (!(d in fd)) {
        if (dirs < max) { fd[d] = 10 + dirs; dir[dirs++] = d } else fd[d] = ""
    }
    name[NR] = fd[d] == "" ? $0 : "/proc/self/fd/" fd[d] "/" substr($0, RLENGTH + 1)
}
END {
    print dirs + 0
    print outside + 0
    for (j = 0; j < dirs; j++) print dir[j]
    for (r = 1; r <= NR; r++) print name[r]
}
"""

# bash: `hold COMMAND...` reads the real paths COMMAND writes and sets
# `names` (tar's name for each, "" if outside) and `outside` (how many),
# with the directories held: each opened by its real path, then judged by
# where the open fd leads, in the kernel's words (one readlink of
# /proc/$$/fd/K for all; bash's own `cd -P` would be no proof: it computes
# $PWD from the path, not from the directory it entered). A held directory
# outside becomes fd K on /dev/null: its files fail, never read. One that
# cannot be opened but can be entered (no read permission) is named by path
# again, file by file (the slow, rare way); one that cannot be entered says
# why on stderr ("hpcgate: unheld: K WORDS", see :func:`unheld`). No
# redirection may be on a command while fds are opened: bash saves a
# redirected fd as the lowest free one from 10, and closes it again after,
# taking a held directory with it; so stderr goes to /dev/null by exec.
_HOLD = """
hold() {
    local held dirs j fd lost=() i n k why real fds=()
    mapfile -d '' -t held < <("$@" | LC_ALL=C awk 'AWK')
    dirs=${held[0]:-0} outside=${held[1]:-0}
    exec 3>&2 2>/dev/null
    for ((j = 0; j < dirs; j++)); do
        fd=$((10 + j))
        fds+=("/proc/$$/fd/$fd")
        eval "exec $fd<\\\"\\${held[j + 2]}\\\"" && continue
        if cd -P -- "${held[j + 2]}"; then
            case $PWD in PATTERN) lost[fd]=$PWD ;; esac
        else
            why=$(stat -c "" -- "${held[j + 2]}/." 2>&1)
            printf 'hpcgate: unheld: %d %s\\n' "$fd" "${why##*: }" >&3
        fi
        eval "exec $fd</dev/null"
    done
    exec 2>&3 3>&-
    if ((dirs > 1000)); then
        mapfile -d '' -t real < <(printf '%s\\0' "${fds[@]}" | xargs -0r readlink -z --)
    elif ((dirs)); then
        mapfile -d '' -t real < <(readlink -z -- "${fds[@]}")
    fi
    for ((j = 0; j < dirs; j++)); do
        case ${real[j]} in PATTERN) ;; *) eval "exec $((10 + j))</dev/null" ;; esac
    done
    names=("${held[@]:dirs + 2}")
    ((${#lost[@]})) || return 0
    for i in "${!names[@]}"; do
        n=${names[i]}
        [[ $n == /proc/self/fd/* ]] || continue
        k=${n#/proc/self/fd/}
        k=${k%%/*}
        [ -n "${lost[k]}" ] && names[i]=${lost[k]%/}/${n#/proc/self/fd/"$k"/}
    done
    return 0
}
"""


def hold_function(pattern: str) -> str:
    """The bash function ``hold`` for a confinement's ``case`` ``pattern``."""
    # AWK first: the pattern may hold anything, the awk program never "PATTERN".
    return _HOLD.replace("AWK", _AWK).replace("PATTERN", pattern)


class HeldNames:
    """Splits the names a held step gave tar (one per asked path) from the archive after them."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._buffer = bytearray()
        self.names: list[str] | None = None if count else []

    def feed(self, data: bytes) -> bytes:
        """Take the next piece of stdout; return what of it is archive (none before the names)."""
        if self.names is not None:
            return data
        self._buffer += data
        parts = bytes(self._buffer).split(b"\0", self._count)
        if len(parts) <= self._count:
            return b""
        self.names = [p.decode(errors="surrogateescape") for p in parts[: self._count]]
        self._buffer.clear()
        return parts[self._count]


# "hpcgate: unheld: K WORDS": fd K holds nothing, its directory could not be entered.
_UNHELD = re.compile(r"^hpcgate: unheld: (\d+) (.*)$", re.M)
_HELD_NAME = re.compile(r"^/proc/self/fd/(\d+)/")


def unheld(stderr: str) -> dict[str, str]:
    """Why each unheld fd holds nothing, in the system's words, by fd number."""
    return {match[1]: match[2] for match in _UNHELD.finditer(stderr)}


def why_unheld(name: str, reasons: dict[str, str]) -> str | None:
    """The words for tar's ``name`` if it lies in a directory that could not be held."""
    match = _HELD_NAME.match(name)
    return reasons.get(match[1]) if match else None
