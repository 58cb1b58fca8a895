# --- common.sh: what every hpcgate transfer job starts with -------------------
# The server writes the job's variables above this line, each one quoted;
# nothing below is generated.
set -u -o pipefail

# say MESSAGE...: one time-stamped line on the output log.
say() { printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }

# fail MESSAGE...: say it on both logs and end the job with status 1. A
# failed job never prints a success line: clients (pyfirecrest) look for one.
fail() {
    say "FAILED: $*"
    say "FAILED: $*" >&2
    exit 1
}

# Jobs redefine on_exit to clean up; it runs however the job ends.
on_exit() { :; }
trap 'on_exit' EXIT
trap 'fail "stopped by a signal (cancelled, or out of time)"' TERM INT HUP

# beside [-d] PATH: a new empty file (-d: directory, private) in PATH's
# directory (same filesystem, so the final rename is atomic), named after
# PATH; prints its name.
beside() {
    local kind=()
    if [ "$1" = -d ]; then kind=(-d); shift; fi
    local dir=${1%/*} name=${1##*/}
    mktemp "${kind[@]}" -- "${dir:-/}/.${name:0:200}.hpcgate-XXXXXX"
}

# venv_with PACKAGE: a venv of this job in its working directory, with
# PACKAGE pip-installed (from pypi_index_url if set), as FirecREST's jobs
# make theirs; its directory in $venv, which the job's on_exit removes.
venv_with() {
    local base
    base=$(compgen -c python3 | grep -E '^python3(\.[0-9]+)?$' | sort -V | tail -n 1)
    [ -n "$base" ] || fail "no python3 on $(hostname)"
    venv=$(mktemp -d -- "$PWD/.hpcgate-$operation-venv-XXXXXX") || fail "cannot create a venv directory"
    "$base" -m venv -- "$venv" || fail "$base cannot create a venv"
    local index=()
    if [ -n "$pypi_index_url" ]; then index=(--index-url "$pypi_index_url"); fi
    "$venv/bin/pip" install -q "${index[@]}" -- "$1" || fail "pip install $1 failed"
}

# publish TEMP TARGET: give TEMP the mode a new file gets here (the umask),
# then rename it onto TARGET (never into TARGET, should that be a directory).
publish() {
    chmod "$(printf '%o' $((0666 & ~0$(umask))))" -- "$1" && mv -f -T -- "$1" "$2"
}

# header NAME FILE: the value of the last NAME header in a `curl -D` dump.
header() { tr -d '\r' <"$2" | sed -n "s/^$1:[[:space:]]*//Ip" | tail -n 1; }

# append_digest HEX FILE: append the 16 bytes of the MD5 written in HEX to FILE.
append_digest() {
    local escaped="" k
    [[ $1 =~ ^[0-9a-f]{32}$ ]] || return 1
    for ((k = 0; k < 32; k += 2)); do escaped+="\\x${1:k:2}"; done
    # shellcheck disable=SC2059  # the format is the point: it holds the bytes
    printf "$escaped" >>"$2"
}

# multipart_etag DIGESTS PARTS: S3's ETag of a multipart object, from the
# binary MD5s of its parts: MD5(md5_1 || ... || md5_n) "-" n.
multipart_etag() {
    local sum
    sum=$(md5sum <"$1") && printf '%s-%s' "${sum%% *}" "$2"
}

# within REAL: whether REAL is one of the roots (array) or below one.
within() {
    local root
    for root in "${roots[@]}"; do
        root=${root%/}
        if [[ -z $root || $1 == "$root" || $1 == "$root"/* ]]; then return 0; fi
    done
    return 1
}

# confine ITEM...: fail unless each path leads inside: "F<path>" with every
# link followed, "E<path>" the entry itself (its directory resolved).
confine() {
    local item path real dir
    for item in "$@"; do
        path=${item:1}
        if [[ $item == F* ]]; then
            real=$(realpath -m -- "$path") || fail "$path: cannot be resolved"
        else
            dir=${path%/*}
            real=$(realpath -m -- "${dir:-/}") || fail "$path: cannot be resolved"
            real=${real%/}/${path##*/}
        fi
        within "$real" || fail "$path leads to $real, not under a configured filesystem"
    done
}

# confine_tree PATH: fail unless every place under PATH, links followed, is inside.
confine_tree() {
    local real
    while IFS= read -r -d '' real; do
        within "$real" || fail "$1: $real is not under a configured filesystem"
    done < <(find -L "$1" -print0 2>/dev/null | xargs -0r realpath -z -m --)
}

# unquote TEXT: a C-quoted name of tar's listing (no quotes around) as it is.
unquote() {
    local text=$1
    if [[ $text != *\\* ]]; then
        unquoted=$text
        return
    fi
    # tar writes \ooo for octal bytes; printf %b wants \0ooo. \" is a quote.
    text=${text//\\\"/\"}
    text=$(sed -E 's/\\([0-7]{3})/\\0\1/g' <<<"$text")
    printf -v unquoted '%b' "$text"
}

# check_archive ARCHIVE TARGET TAR_OPTION...: fail unless, by tar's own
# listing, no member lands outside TARGET (a "../" in its name, or a
# directory of TARGET that is a link leading elsewhere) and no link it
# makes leads outside the roots. The server judged the same at submission;
# the archive may have been replaced since. Unparseable lines fail it.
check_archive() {
    local archive=$1 target=$2 real line name link dir
    shift 2
    real=$(realpath -e -- "$target") || fail "$target: cannot be resolved"
    local -A dirs=()
    local -a places=() kinds=()
    local pattern='^(.)[^ ]* +[^ ]+ +[^ ]+ +[^ ]+ +[^ ]+ +"((\\.|[^\\"])*)"( -> "((\\.|[^\\"])*)"| link to "((\\.|[^\\"])*)")?$'
    while IFS= read -r line; do
        [[ $line =~ $pattern ]] || fail "$archive: cannot read tar's listing: $line"
        unquote "${BASH_REMATCH[2]}"
        name=${unquoted#/}
        name=${name#/}
        [[ /$name/ == */../* ]] && fail "$archive: member $name would land outside $target"
        dir=${name%/}
        dir=${dir%/*}
        [[ $dir == "${name%/}" ]] && dir=""
        if [[ -z ${dirs[x$dir]:-} ]]; then
            dirs[x$dir]=1
            places+=("$real/$dir")
            kinds+=(dir)
        fi
        if [[ ${BASH_REMATCH[1]} == l ]]; then
            unquote "${BASH_REMATCH[5]}"
            link=$unquoted
            [[ $link == /* ]] || link=$real/$dir/$link
            places+=("$link")
            kinds+=(link)
        fi
    done < <(tar -t -v --quoting-style=c --numeric-owner "$@" -f "$archive" || echo "tar failed")
    local -a reals=()
    mapfile -d '' -t reals < <(printf '%s\0' "${places[@]}" | xargs -0r realpath -z -m --)
    local i
    for i in "${!places[@]}"; do
        if [[ ${kinds[i]} == link ]]; then
            within "${reals[i]}" || fail "$archive: a link would lead outside the configured filesystems: ${reals[i]}"
        elif [[ ${reals[i]} != "$real" && ${reals[i]} != "$real"/* ]]; then
            fail "$archive: members would land outside $target: ${reals[i]}"
        fi
    done
}

say "hpcgate $operation job ${SLURM_JOB_ID:-?} on $(hostname)"
