# Runs the script that arrives on stdin. It is saved to a private temporary
# file first, so that commands inside it cannot read the rest of it as their
# own input, and nothing of it shows in `ps`.
umask 077
f=$(mktemp) || exit 1
trap 'rm -f "$f"' EXIT
cat >"$f" && {{ sudo }}bash "$f"
