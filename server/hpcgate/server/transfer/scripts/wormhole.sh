# --- wormhole.sh: one magic-wormhole transfer with the client (upload or download)
# Variables: direction ("receive": the client uploads to path; "send": it
# downloads path), path, code (the wormhole code both ends use), relay_url
# and transit_helper (the mailbox server and transit relay; "" for
# magic-wormhole's defaults), transfer_timeout (seconds the wormhole may
# take in all), command (a wormhole on the cluster, or "" to install package
# into a venv of this job, from pypi_index_url if set), package.
#
# A receive writes into a private temporary directory beside the target
# (wormhole's own partial file included) and renames the file onto the
# target only once wormhole received it whole (it checks the size; the
# records are authenticated) and it is a regular file: a transfer that
# breaks off, or a client that sends a text or a directory, leaves the
# target as it was and no temporary file.
on_exit() {
    if [ -n "${tmpdir:-}" ]; then rm -rf -- "$tmpdir"; fi
    if [ -n "${venv:-}" ]; then rm -rf -- "$venv"; fi
}
tmpdir=""
venv=""

if [ "$direction" = send ]; then
    [ -f "$path" ] && [ -r "$path" ] || fail "$path is not a readable regular file"
else
    tmpdir=$(beside -d "$path") || fail "cannot create a directory beside $path"
fi

if [ -z "$command" ]; then
    venv_with "$package"
    command=$venv/bin/wormhole
fi
options=()
if [ -n "$relay_url" ]; then options+=(--relay-url "$relay_url"); fi
if [ -n "$transit_helper" ]; then options+=(--transit-helper "$transit_helper"); fi

say "waiting for the client on the wormhole ($direction, at most $transfer_timeout s)"
if [ "$direction" = receive ]; then
    received=$tmpdir/file
    timeout -- "$transfer_timeout" "$command" "${options[@]}" receive --hide-progress \
        --accept-file --output-file "$received" -- "$code" </dev/null ||
        fail "the upload did not complete; $path is unchanged"
    [ -f "$received" ] && [ ! -L "$received" ] ||
        fail "the client sent no file (a text or a directory); $path is unchanged"
    size=$(stat -c %s -- "$received") || fail "cannot stat $received"
    publish "$received" "$path" || fail "cannot move the file onto $path"
    say "File was successfully uploaded to $path ($size bytes)"
else
    timeout -- "$transfer_timeout" "$command" "${options[@]}" send --hide-progress --no-qr \
        --code "$code" -- "$path" </dev/null ||
        fail "the download did not complete"
    say "File was successfully downloaded from $path by the client"
fi
