# --- command.sh: one command (cp, mv, rm, tar -x), its argv quoted above ---------
confine "${confined[@]}"
if [ -n "$tree" ]; then confine_tree "$tree"; fi
if [ ${#members_of[@]} -gt 0 ]; then check_archive "${members_of[@]}"; fi
say "running:$(printf ' %q' "${command[@]}")"
"${command[@]}"
status=$?
if [ "$status" -ne 0 ]; then
    fail "${command[0]} exited with status $status"
fi
say "$success"
