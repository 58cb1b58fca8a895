# --- egress.sh: from the cluster to the staging bucket (a client's download) ----
# Variables: source, size, part_size, parts, part_urls (array), complete_url,
# abort_url, delete_url (presigned, private endpoint); completing: the line
# logged (last) while the upload is being completed, which the server reads.
#
# Uploads the file part by part (each part's ETag must be the MD5 of the
# bytes read; a part is sent up to three times), completes the multipart
# upload and checks the object's ETag.
# On failure the multipart upload is aborted, or a wrong object deleted.
on_exit() {
    if [ "${completed:-1}" = 0 ]; then
        curl -sS -X DELETE -o /dev/null "$abort_url" 2>/dev/null
    fi
    if [ -n "${work:-}" ]; then rm -rf -- "$work"; fi
}

command -v curl >/dev/null || fail "curl is not installed on $(hostname)"
completed=0
work=$(mktemp -d) || fail "cannot create a temporary directory"

# read_part: the bytes of the current part (offset, length) of the source.
read_part() {
    dd if="$source" iflag=skip_bytes,count_bytes skip="$offset" count="$length" bs=4M status=none
}

[ -f "$source" ] && [ -r "$source" ] || fail "$source is not a readable regular file"
now_size=$(stat -L -c %s -- "$source") || fail "cannot stat $source"
[ "$now_size" = "$size" ] ||
    fail "$source has $now_size bytes now, $size when the download was requested; ask again"
say "staging $source ($size bytes) in $parts part(s)"

: >"$work/digests"
printf '<CompleteMultipartUpload>' >"$work/complete.xml"
for ((i = 0; i < parts; i++)); do
    offset=$((i * part_size))
    length=$((size - offset < part_size ? size - offset : part_size))
    md5=$(read_part | md5sum) || fail "cannot read part $((i + 1)) of $source"
    md5=${md5%% *}
    etag=""
    for attempt in 1 2 3; do
        # A known length, never chunked: curl would send both headers for a
        # pipe (invalid HTTP; S3 refuses chunked parts).
        code=$(read_part | curl -sS -T - -H "Content-Length: $length" -H "Transfer-Encoding:" \
            -o /dev/null -D "$work/put" -w '%{http_code}' "${part_urls[i]}" 2>>"$work/curl.err")
        if [ "$code" = 200 ]; then
            etag=$(header etag "$work/put")
            etag=${etag//\"/}
            # Other bytes than were read (changed in transit): send the part again.
            [ "$etag" = "$md5" ] && break
            say "part $((i + 1)): S3 stored other bytes (ETag $etag) than were read; sending it again"
        fi
        sleep "$attempt"
    done
    [ -n "$etag" ] || fail "uploading part $((i + 1)) failed (HTTP $code): $(tail -n 1 "$work/curl.err")"
    [ "$etag" = "$md5" ] ||
        fail "part $((i + 1)): S3 stored other bytes (ETag $etag) than were read (MD5 $md5)"
    append_digest "$md5" "$work/digests" || fail "md5sum printed $md5"
    printf '<Part><PartNumber>%d</PartNumber><ETag>"%s"</ETag></Part>' $((i + 1)) "$md5" \
        >>"$work/complete.xml"
done
printf '</CompleteMultipartUpload>' >>"$work/complete.xml"

say "$completing"

code=$(curl -sS -X POST -H 'Content-Type: application/xml' --data-binary "@$work/complete.xml" \
    -o "$work/completed" -w '%{http_code}' "$complete_url" 2>>"$work/curl.err")
if [ "$code" != 200 ] || grep -q '<Error>' "$work/completed"; then
    fail "completing the multipart upload failed (HTTP $code): $(head -c 300 "$work/completed")"
fi
completed=1
etag=$(sed -n 's:.*<ETag>\(.*\)</ETag>.*:\1:p' "$work/completed" | sed 's/&quot;//g; s/&#34;//g; s/"//g')
mine=$(multipart_etag "$work/digests" "$parts")
if [ "$etag" != "$mine" ]; then
    curl -sS -X DELETE -o /dev/null "$delete_url" 2>/dev/null
    fail "verification failed: S3's ETag is $etag, the parts read hash to $mine; the object is deleted"
fi
say "verified end to end: the MD5s of the $parts part(s) read give S3's ETag $etag"
say "Multipart file upload successfully completed: $source ($size bytes) is ready to download"
