# --- compress.sh: tar -c into a temporary file, renamed onto the target ---------
# Variables: source, target, parent, base, tar_options (array), pattern,
# find_command (array; used when pattern is not empty), success.
tmp=""
on_exit() { if [ -n "${tmp:-}" ]; then rm -f -- "$tmp"; fi; }

[ -e "$source" ] || [ -L "$source" ] || fail "$source: No such file or directory"
confine "${confined[@]}"
if [ -n "$tree" ]; then confine_tree "$tree"; fi
tmp=$(beside "$target") || fail "cannot create a file beside $target"
if [ -z "$pattern" ]; then
    say "archiving $source into $target"
    tar -c "${tar_options[@]}" -f "$tmp" -C "$parent" -- "$base"
else
    say "archiving the files of $source matching $pattern into $target"
    # find names the matching regular files relative to source; tar reads
    # them NUL-separated and verbatim, each under source's own name.
    "${find_command[@]}" | while IFS= read -r -d '' relative; do
        if [ -n "$relative" ]; then
            printf '%s/%s\0' "$base" "$relative"
        else
            printf '%s\0' "$base"
        fi
    done | tar -c "${tar_options[@]}" -f "$tmp" -C "$parent" \
        --null --verbatim-files-from --no-recursion -T -
fi
status=$?
[ "$status" -eq 0 ] || fail "tar exited with status $status; nothing was written to $target"
publish "$tmp" "$target" || fail "cannot move the archive onto $target"
tmp=""
say "$success"
