# --- streamer.sh: a firecrest-streamer server for one client (upload or download) --
# Variables: direction ("receive": the client uploads to path; "send": it
# downloads path), path, size (receive: the bytes announced), secret, host,
# ports ("first last"), public_ips (array), wait_timeout, inbound_limit,
# python (an interpreter with firecrest-streamer, or "" to install package
# into a venv of this job, from pypi_index_url if set), package, job (the
# Python code of streamer_job.py).
#
# A receive writes into a temporary file beside the target and renames it
# onto the target only once the bytes are all there and their SHA-256 is the
# client's: a transfer that breaks off leaves the target as it was.
on_exit() {
    if [ -n "${tmp:-}" ]; then rm -f -- "$tmp"; fi
    if [ -n "${venv:-}" ]; then rm -rf -- "$venv"; fi
}
tmp=""
venv=""

if [ "$direction" = send ]; then
    [ -f "$path" ] && [ -r "$path" ] || fail "$path is not a readable regular file"
else
    tmp=$(beside "$path") || fail "cannot create a file beside $path"
fi

if [ -z "$python" ]; then
    venv_with "$package"
    python=$venv/bin/python
fi

say "starting the streamer server ($direction, ports ${ports% *}-${ports#* })"
target=$path
broke="the download did not complete"
if [ "$direction" = receive ]; then
    target=$tmp
    broke="the upload did not complete; $path is unchanged"
fi
HPCGATE_STREAMER_OPERATION=$direction HPCGATE_STREAMER_PATH=$target HPCGATE_STREAMER_SIZE=$size \
    HPCGATE_STREAMER_SECRET=$secret HPCGATE_STREAMER_HOST=$host HPCGATE_STREAMER_PORTS=$ports \
    HPCGATE_STREAMER_IPS="${public_ips[*]}" HPCGATE_STREAMER_WAIT=$wait_timeout \
    HPCGATE_STREAMER_LIMIT=$inbound_limit "$python" -u -c "$job" </dev/null ||
    fail "$broke"

if [ "$direction" = receive ]; then
    received=$(stat -c %s -- "$tmp") || fail "cannot stat $tmp"
    [ "$received" = "$size" ] || fail "received $received bytes, expected $size"
    publish "$tmp" "$path" || fail "cannot move the file onto $path"
    tmp=""
    say "File was successfully uploaded to $path ($size bytes)"
else
    say "File was successfully downloaded from $path by the client"
fi
