# --- ingress.sh: from the staging bucket to the cluster (a client's upload) -----
# Variables: target, size, part_size, parts, give_up_at (epoch seconds),
# head_url, get_url, abort_url, parts_url (presigned, private endpoint).
#
# Waits for the client to complete the multipart upload (HEAD, backing off
# from 1 s; while the object is missing, the upload's part list must still
# exist, or the upload is gone and the job gives up at once), downloads the object in ranges of part_size into a temporary file
# beside the target, checks it against S3's ETag (the MD5 of the parts' MD5s),
# and only then renames it onto the target. On any failure the target is
# untouched, and an upload that never completed is aborted.
# However the job ends before the object is complete (given up, failed,
# cancelled), the multipart upload is aborted: nothing will ever ingest it.
on_exit() {
    if [ "${complete:-1}" = 0 ]; then
        code=$(curl -sS -X DELETE -o /dev/null -w '%{http_code}' "$abort_url" 2>/dev/null)
        say "the multipart upload is aborted (HTTP $code)"
    fi
    if [ -n "${tmp:-}" ]; then rm -f -- "$tmp"; fi
    if [ -n "${work:-}" ]; then rm -rf -- "$work"; fi
}

command -v curl >/dev/null || fail "curl is not installed on $(hostname)"
complete=0
work=$(mktemp -d) || fail "cannot create a temporary directory"
tmp=""

say "waiting for the client to upload $size bytes in $parts part(s) and complete the upload"
delay=1
gone=0
while :; do
    code=$(curl -sS -I -o /dev/null -D "$work/head" -w '%{http_code}' "$head_url" 2>>"$work/curl.err")
    case "$code" in
        200) break ;;
        404)
            # Not complete yet, unless the multipart upload is gone too (aborted,
            # its bucket deleted, the store's state lost): then nothing can come.
            # A completion in flight shows neither for a moment, so only a
            # loss seen at several checks in a row (over 7 s) counts.
            listed=$(curl -sS -o /dev/null -w '%{http_code}' "$parts_url" 2>>"$work/curl.err")
            if [ "$listed" = 404 ]; then
                gone=$((gone + 1))
                ((gone < 4)) ||
                    fail "the upload is gone from S3 (aborted, or its bucket or state lost);" \
                        "nothing was written to $target"
            else
                gone=0
            fi
            ;;
        000 | 5??) ;; # the store is away for a moment
        *)
            fail "S3 answered HTTP $code when asked for the object; nothing was written to $target"
            ;;
    esac
    now=$(date +%s)
    if ((now >= give_up_at)); then
        fail "the upload was not completed by $(date -u -d "@$give_up_at" +%Y-%m-%dT%H:%M:%SZ);" \
            "nothing was written to $target"
    fi
    left=$((give_up_at - now))
    sleep $((delay < left ? delay : left))
    delay=$((delay * 2 > 10 ? 10 : delay * 2))
done
complete=1

length=$(header content-length "$work/head")
etag=$(header etag "$work/head")
etag=${etag//\"/}
say "the upload is complete: $length bytes, ETag $etag"
[ "$length" = "$size" ] || fail "the object has $length bytes, not the $size announced"
[ "${etag##*-}" = "$parts" ] ||
    fail "the object's ETag $etag does not name the $parts parts of $part_size bytes announced"

tmp=$(beside "$target") || fail "cannot create a file beside $target"
: >"$work/digests"
for ((i = 0; i < parts; i++)); do
    first=$((i * part_size))
    last=$((first + part_size < size ? first + part_size - 1 : size - 1))
    md5=""
    for attempt in 1 2 3; do
        truncate -s "$first" -- "$tmp" || fail "cannot write $tmp"
        if ((size == 0)); then
            md5=$(md5sum </dev/null)
            break
        fi
        if md5=$(curl -sS -f -r "$first-$last" "$get_url" 2>>"$work/curl.err" |
            tee -a -- "$tmp" | md5sum); then
            break
        fi
        md5=""
        sleep "$attempt"
    done
    [ -n "$md5" ] || fail "downloading part $((i + 1)) failed: $(tail -n 1 "$work/curl.err")"
    append_digest "${md5%% *}" "$work/digests" || fail "md5sum printed ${md5}"
done
received=$(stat -c %s -- "$tmp") || fail "cannot stat $tmp"
[ "$received" = "$size" ] || fail "received $received bytes, expected $size"
mine=$(multipart_etag "$work/digests" "$parts")
[ "$mine" = "$etag" ] ||
    fail "verification failed: the parts received hash to $mine, S3's ETag is $etag"
say "verified end to end: the MD5s of the $parts part(s) received give S3's ETag $etag"
publish "$tmp" "$target" || fail "cannot move the file onto $target"
tmp=""
say "File was successfully uploaded to $target ($size bytes)"
