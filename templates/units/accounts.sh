# mailstack: system users, one per mailbox (the guide's Dovecot checks
# passwords with PAM). Reads "name<TAB>hash" lines on stdin; "-" is no hash:
# the account is locked. Users missing from the stack are left alone: their
# mail is never deleted by a deployment.
set -euo pipefail
while IFS=$'\t' read -r name hash; do
  case "$name" in
    ''|*[!a-z0-9_-]*) echo "refusing user name: $name" >&2; exit 1 ;;
  esac
  if ! id -u "$name" >/dev/null 2>&1; then
    useradd --create-home --user-group --shell /usr/sbin/nologin "$name" </dev/null
    echo "created user $name" >&2
  fi
  if [ "$hash" = "-" ]; then
    usermod --lock "$name" </dev/null
  else
    printf '%s:%s\n' "$name" "$hash" | chpasswd --encrypted
  fi
  id -u "$name"
done
