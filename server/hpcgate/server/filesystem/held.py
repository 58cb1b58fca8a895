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
  directory itself, not a path walked again (a batch of one directory, the
  usual one, enters it instead, ``cd /proc/$$/fd/10``, and names its files
  ``./NAME``: a lookup through /proc costs tar ~4 us a file), and tar without
  ``--dereference`` does not follow ``NAME`` should it have become a link:
  it archives the link, which every reader drops as not a regular file.

The names tar was given come first on stdout, one per asked path in order
(NUL-terminated, empty for a path leading outside), then the archive:
:class:`HeldNames` splits them off, so that members map back to the asked
paths. No round trip is added: it is still one command per batch.

A directory the user may enter but not read (mode 711: opening it fails)
is held by a process instead: a subshell enters it and waits while the
step's shell lives, and its ``/proc/PID/cwd``, judged by where it leads like
the fds, names the files. Directories beyond the fd budget (``held_max``,
the raised soft limit less a margin: more than a bulk download of 100,000
files can have where the hard limit is the usual 2^19 or more) are not read
by path either: their files fail, saying why. Nothing is read by path.
"""

from __future__ import annotations

import re

from hpcgate.server.filesystem.tarstream import TAR_ARGV

# The bulk tar without --dereference: a name that became a link is archived
# as the link (links asked for were resolved by realpath before).
HELD_TAR_ARGV = tuple(arg for arg in TAR_ARGV if arg != "--dereference")

# Reads real paths (NUL-separated) on stdin; writes bash assignments (each
# value single-quoted) of `outside` (how many lead outside), `dirs` (the
# held directories, fd 10 first) and `names` (tar's name for each path, ""
# if outside): bash takes them with one eval of a command substitution,
# read in blocks, where `mapfile` would read a pipe byte by byte.
# ENVIRON: inside (an ERE), held_max. No single quote may appear in it.
_AWK = r"""
function q(s,    parts, n, i, out) {
    n = split(s, parts, "\047")
    out = parts[1]
    for (i = 2; i <= n; i++) out = out "\047\\\047\047" parts[i]
    return "\047" out "\047"
}
BEGIN { RS = "\0"; inside = ENVIRON["inside"]; max = ENVIRON["held_max"] + 0; err = "/dev/stderr" }
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
        if (dirs < max) { fd[d] = 10 + dirs; dir[dirs++] = d }
        else {
            # Beyond the fd budget: named through fd 9, which holds /dev/null,
            # so they fail (never read by path), saying why once.
            fd[d] = 9
            if (!over++)
                printf "hpcgate: unheld: 9 more than %d directories in one call\n", max > err
        }
    }
    name[NR] = "/proc/self/fd/" fd[d] "/" substr($0, RLENGTH + 1)
}
END {
    printf "outside=%d\ndirs=(", outside
    for (j = 0; j < dirs; j++) printf " %s", q(dir[j])
    printf " )\nnames=("
    for (r = 1; r <= NR; r++) printf " %s", q(name[r])
    printf " )\n"
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
    local dirs count j fd lost=() i n k why real fds=() awk=awk holder where
    # mawk where there is one: it starts in half gawk's time.
    command -v mawk >/dev/null && awk=mawk
    eval "$("$@" | LC_ALL=C "$awk" 'AWK')" || return 1
    count=${#dirs[@]}
    exec 3>&2 2>/dev/null 9</dev/null
    for ((j = 0; j < count; j++)); do
        fd=$((10 + j))
        fds+=("/proc/$$/fd/$fd")
        eval "exec $fd<\\\"\\${dirs[j]}\\\"" && continue
        # Not readable but perhaps enterable (mode 711): a holder process
        # enters it and stays there while this shell lives; its cwd,
        # /proc/PID/cwd, is then the directory held (judged below by where
        # that link leads), as fd K is for the others. It says it is in by
        # one line on fd K, or nothing if it could not enter.
        # It lets go of fd 3 (the channel's stderr) first: sshd ends the
        # step only when every holder of that stream is gone, which would
        # keep the reply waiting out the holder's last second of sleep.
        eval "exec $fd< <(exec 3>&-; cd -- \\\"\\${dirs[j]}\\\" && echo \
            && while kill -0 $$; do sleep 1; done)"
        holder=$!
        if read -r -u "$fd" _; then
            lost[fd]=/proc/$holder/cwd
        else
            why=$(stat -c "" -- "${dirs[j]}/." 2>&1)
            printf 'hpcgate: unheld: %d %s\\n' "$fd" "${why##*: }" >&3
        fi
        eval "exec $fd</dev/null"
    done
    if ((${#lost[@]})); then
        mapfile -d '' -t where < <(readlink -z -- "${lost[@]}")
        j=0
        for k in "${!lost[@]}"; do
            # A holder that entered a place outside holds nothing: its
            # files stay named through fd K, now /dev/null, and fail.
            case ${where[j]} in PATTERN) ;; *) unset 'lost[k]' ;; esac
            j=$((j + 1))
        done
    fi
    exec 2>&3 3>&-
    if ((count > 1000)); then
        mapfile -d '' -t real < <(printf '%s\\0' "${fds[@]}" | xargs -0r readlink -z --)
    elif ((count)); then
        mapfile -d '' -t real < <(readlink -z -- "${fds[@]}")
    fi
    for ((j = 0; j < count; j++)); do
        case ${real[j]} in PATTERN) ;; *) eval "exec $((10 + j))</dev/null" ;; esac
    done
    # One directory, the usual batch: enter the held fd itself (cd onto the
    # magic link reaches the open directory, not a path) and name the files
    # "./NAME": tar then opens them in a plain directory, not through /proc.
    if ((count == 1)) && [[ -z ${lost[10]} ]]; then
        case ${real[0]} in
            PATTERN) cd "/proc/$$/fd/10" && names=("${names[@]/#"/proc/self/fd/10/"/./}") ;;
        esac
    fi
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
